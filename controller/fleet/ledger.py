"""Exactly once across moves: which node owns which stretch of a workload's input stream, and
which stream positions have been accepted.

A workload with R replicas has R lanes (0..R-1), each an input stream of positions 0, 1, 2, ...
(a result's `in`). At any time a lane has one owner for each stretch of positions: a row
(workload, lane, node, start, until) says `node` owns positions start <= pos < until (until NULL:
open-ended). A move closes the old owner's row at the hand-over position H and opens the new
owner's at H, so the stretches never overlap.

A result is accepted when its node owns its position and the position was not accepted before
(the `accepted` table's primary key). A result for a position another node was accepted for is
dropped and counted, never stored; one for a position the same node delivered before (a
rebooted node re-inferring from its cached assignment until the controller's resume position
reaches it) is kept as that node's result, the stream counting the position once. So per
workload and lane, each position is accepted once, from exactly one node - the evidence the
end-to-end tests read.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    workload TEXT NOT NULL,
    lane INTEGER NOT NULL,
    node TEXT NOT NULL,
    start INTEGER NOT NULL,
    until INTEGER,
    PRIMARY KEY (workload, lane, start)
);
CREATE TABLE IF NOT EXISTS accepted (
    workload TEXT NOT NULL,
    lane INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    node TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (workload, lane, pos)
);
"""


class Ledger:
    def __init__(self, db):
        self.db = db
        db.executescript(SCHEMA)
        self._next = {}  # (workload, lane) -> first position not yet accepted (cache)

    def open_rows(self, workload=None):
        """[(workload, lane, node, start)] of every open-ended stretch."""
        q = "SELECT workload, lane, node, start FROM streams WHERE until IS NULL"
        args = ()
        if workload is not None:
            q += " AND workload=?"
            args = (workload,)
        return [tuple(r) for r in self.db.execute(q + " ORDER BY workload, lane", args)]

    def row(self, workload, node):
        """The newest stretch of `workload` owned by `node`: (lane, start, until) or None."""
        r = self.db.execute("SELECT lane, start, until FROM streams WHERE workload=? AND node=? "
                            "ORDER BY start DESC LIMIT 1", (workload, node)).fetchone()
        return tuple(r) if r else None

    def lane_of(self, workload, node):
        """The lane `node` currently owns open-ended, or None."""
        r = self.db.execute("SELECT lane FROM streams WHERE workload=? AND node=? AND until IS NULL",
                            (workload, node)).fetchone()
        return r[0] if r else None

    def free_lane(self, workload, replicas):
        taken = {lane for _, lane, _, _ in self.open_rows(workload)}
        for lane in range(replicas):
            if lane not in taken:
                return lane
        return len(taken)

    def next_pos(self, workload, lane):
        key = (workload, lane)
        if key not in self._next:
            r = self.db.execute("SELECT MAX(pos) FROM accepted WHERE workload=? AND lane=?", key).fetchone()
            s = self.db.execute("SELECT MAX(start) FROM streams WHERE workload=? AND lane=?", key).fetchone()
            self._next[key] = max(-1 if r[0] is None else r[0], -1) + 1
            if s[0] is not None and r[0] is None:
                self._next[key] = max(self._next[key], s[0])
        return self._next[key]

    def open(self, workload, lane, node, start):
        self.db.execute("INSERT OR REPLACE INTO streams (workload, lane, node, start, until) VALUES (?,?,?,?,NULL)",
                        (workload, lane, node, start))

    def close(self, workload, lane, node, until):
        self.db.execute("UPDATE streams SET until=? WHERE workload=? AND lane=? AND node=? AND until IS NULL",
                        (until, workload, lane, node))

    def reopen(self, workload, lane, node, start):
        """Undo a close (an aborted move): the stretch from `start` is open-ended again."""
        self.db.execute("UPDATE streams SET until=NULL WHERE workload=? AND lane=? AND node=? AND start=?",
                        (workload, lane, node, start))

    def drop(self, workload, lane, node, start):
        self.db.execute("DELETE FROM streams WHERE workload=? AND lane=? AND node=? AND start=?",
                        (workload, lane, node, start))

    def owner_lane(self, workload, node, pos):
        """The lane in which `node` owns position `pos` of `workload`, or None."""
        r = self.db.execute("SELECT lane FROM streams WHERE workload=? AND node=? AND start<=? AND "
                            "(until IS NULL OR ?<until) ORDER BY start DESC LIMIT 1",
                            (workload, node, pos, pos)).fetchone()
        return r[0] if r else None

    def accept(self, workload, lane, pos, node, boot, seq):
        """True when the position was not accepted before (now it is)."""
        cur = self.db.execute("INSERT OR IGNORE INTO accepted (workload, lane, pos, node, boot, seq) VALUES (?,?,?,?,?,?)",
                              (workload, lane, pos, node, boot, seq))
        if cur.rowcount != 1:
            return False
        key = (workload, lane)
        if key in self._next and pos + 1 > self._next[key]:
            self._next[key] = pos + 1
        elif key not in self._next:
            self.next_pos(workload, lane)
        return True

    def tracks(self, workload):
        return self.db.execute("SELECT 1 FROM streams WHERE workload=? LIMIT 1", (workload,)).fetchone() is not None

    def accepted_by(self, workload, lane, pos):
        r = self.db.execute("SELECT node FROM accepted WHERE workload=? AND lane=? AND pos=?", (workload, lane, pos)).fetchone()
        return r[0] if r else None

    def forget_workload(self, workload):
        self.db.execute("DELETE FROM streams WHERE workload=?", (workload,))
        for key in [k for k in self._next if k[0] == workload]:
            del self._next[key]
