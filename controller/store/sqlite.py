"""The registry in SQLite: one file, zero setup, the default backend (controller/store/base.py
says what a backend does).

Schema versions live in SQLite's user_version; MIGRATIONS brings an older file up to
SCHEMA_VERSION when it is opened. A file written before versions existed reads as version 0 and
gets version 1 (its tables are created where missing; workloads gain the `extra` column).
Other processes (`edgefleet status`) open their own read-only connection on the same file; WAL
mode lets them read while the controller writes.
"""
import json
import os
import sqlite3
import time

from ..errors import StoreError
from .base import SCHEMA_VERSION, WORKLOAD_EXTRA, Registry, result_outputs, stored_result_row

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    board TEXT NOT NULL,
    runtime TEXT NOT NULL,
    fw TEXT NOT NULL DEFAULT '',
    boot INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'unknown',
    caps TEXT NOT NULL DEFAULT '{}',
    telemetry TEXT NOT NULL DEFAULT '{}',
    last_seen REAL NOT NULL DEFAULT 0,
    epoch INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS workloads (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    rate REAL NOT NULL,
    input TEXT NOT NULL,
    replicas INTEGER NOT NULL DEFAULT 1,
    constraints TEXT NOT NULL DEFAULT '{}',
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS placements (
    workload TEXT NOT NULL,
    node TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (workload, node)
);
CREATE TABLE IF NOT EXISTS results (
    node TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    workload TEXT NOT NULL,
    label INTEGER NOT NULL,
    truth INTEGER,
    score REAL NOT NULL,
    us INTEGER NOT NULL,
    up INTEGER NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (node, boot, seq)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    node TEXT NOT NULL,
    level TEXT NOT NULL,
    kind TEXT NOT NULL,
    msg TEXT NOT NULL,
    data TEXT
);
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


def _to_v1(db):
    db.executescript(SCHEMA_V1)
    columns = [r[1] for r in db.execute("PRAGMA table_info(workloads)")]
    if "extra" not in columns:  # written before workloads had resources and a priority
        db.execute("ALTER TABLE workloads ADD COLUMN extra TEXT NOT NULL DEFAULT '{}'")


SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS resume (
    node TEXT NOT NULL,
    workload TEXT NOT NULL,
    pos INTEGER NOT NULL,
    PRIMARY KEY (node, workload)
);
CREATE TABLE IF NOT EXISTS moves (
    workload TEXT NOT NULL,
    lane INTEGER NOT NULL,
    state TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (workload, lane)
);
CREATE TABLE IF NOT EXISTS drains (
    node TEXT PRIMARY KEY
);
"""


def _to_v2(db):
    """What the reconciler must remember across a controller restart: the stream positions
    rebooted nodes resume from, the moves in progress, the nodes being drained."""
    db.executescript(SCHEMA_V2)


def _to_v3(db):
    """The A/B slot each node runs (hello's `slot`), beside its version."""
    db.execute("ALTER TABLE nodes ADD COLUMN slot TEXT")


SCHEMA_V4 = """
CREATE TABLE IF NOT EXISTS samples (
    node TEXT NOT NULL,
    res INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    cpu REAL,
    mem_free INTEGER,
    battery REAL,
    rps REAL,
    PRIMARY KEY (node, res, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS results_by_workload ON results (workload, received);
"""


def _to_v4(db):
    """Telemetry history for the dashboard's plots, downsampled (controller/dashboard/history.py).
    WITHOUT ROWID: the primary key is the table, so a sample is stored once, not again in an index.
    Results get an index by workload and arrival: a workload's page reads its last hour."""
    db.executescript(SCHEMA_V4)


SCHEMA_V5 = """
CREATE INDEX IF NOT EXISTS results_received ON results (received);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS accepted_result ON accepted (node, boot, seq);
CREATE INDEX IF NOT EXISTS streams_node ON streams (workload, node);
CREATE TABLE IF NOT EXISTS result_floors (
    node TEXT NOT NULL,
    boot INTEGER NOT NULL,
    through INTEGER NOT NULL,
    PRIMARY KEY (node, boot)
);
CREATE TABLE IF NOT EXISTS leadership (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT,
    token INTEGER NOT NULL,
    expires REAL NOT NULL
);
INSERT OR IGNORE INTO leadership (id, holder, token, expires) VALUES (1, NULL, 0, 0);
"""


def _to_v5(db):
    """Retention (controller/fleet/retention.py): results and events found oldest first, a
    result's stream position found from it, and the floor each pruned (node, boot) leaves. And
    the leadership lease of controller replicas (controller/fleet/leadership.py)."""
    db.executescript(SCHEMA_V5)


def _to_v6(db):
    """What a result says beyond its label and score, as its workload's output spec asks (the
    k best classes, every value: firmware/outputs.py), as JSON; NULL for a plain result."""
    columns = [row[1] for row in db.execute("PRAGMA table_info(results)")]
    if "outputs" not in columns:   # a registry set back to an older version keeps its columns
        db.execute("ALTER TABLE results ADD COLUMN outputs TEXT")


# version -> the step that brings a registry of version-1 to it
MIGRATIONS = {1: _to_v1, 2: _to_v2, 3: _to_v3, 4: _to_v4, 5: _to_v5, 6: _to_v6}

# What retention orders each prunable table by.
ARRIVAL = {"results": "received", "events": "ts"}



def _node_row(row):
    node = dict(row)
    node["caps"] = json.loads(node["caps"])
    node["telemetry"] = json.loads(node["telemetry"])
    return node


class SqliteRegistry(Registry):
    def __init__(self, path, readonly=False):
        self.path = self.location = path
        self.readonly = readonly
        try:
            self.db = self._connect(readonly)
            version = self.schema_version()
            if version > SCHEMA_VERSION:
                self.db.close()
                raise StoreError("the registry at %s has schema version %d; this edgefleet knows up to %d "
                                 "(upgrade edgefleet)" % (path, version, SCHEMA_VERSION), path)
            if version < SCHEMA_VERSION:
                if readonly:  # migrating needs a writer, once
                    self.db.close()
                    self.db = self._connect(False)
                self._migrate(version)
        except sqlite3.DatabaseError as e:
            raise StoreError("%s is not an edgefleet registry (%s)" % (path, e), path) from None

    def _connect(self, readonly):
        if self.path == ":memory:":
            db = sqlite3.connect(":memory:")
        elif readonly:
            db = sqlite3.connect("file:%s?mode=ro" % os.path.abspath(self.path), uri=True, timeout=10)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            # The registry names every node and holds what they reported: owner-only, made so
            # before SQLite writes a byte (it keeps an existing file's mode).
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
            db = sqlite3.connect(self.path, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            for suffix in ("-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.chmod(self.path + suffix, 0o600)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _migrate(self, version):
        for step in range(version + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[step](self.db)
            self.db.execute("PRAGMA user_version=%d" % step)
        self.db.commit()

    def schema_version(self):
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def close(self):
        self.db.close()

    def commit(self, durable=True):
        self.db.commit()

    def rollback(self):
        self.db.rollback()

    # -- nodes ------------------------------------------------------------------------------

    def upsert_node(self, node_id, board, runtime, fw, boot, caps, state="online", now=None, slot=None):
        self.db.execute(
            "INSERT INTO nodes (id, board, runtime, fw, slot, boot, caps, state, last_seen) VALUES (?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET board=excluded.board, runtime=excluded.runtime, fw=excluded.fw, "
            "slot=excluded.slot, boot=excluded.boot, caps=excluded.caps, state=excluded.state, "
            "last_seen=excluded.last_seen",
            (node_id, board, runtime, fw, slot, boot, json.dumps(caps), state, now or time.time()),
        )

    def set_node_state(self, node_id, state, now=None):
        cur = self.db.execute("UPDATE nodes SET state=?, last_seen=COALESCE(?, last_seen) WHERE id=?",
                              (state, now, node_id))
        return cur.rowcount > 0

    def record_heartbeat(self, node_id, telemetry, now=None):
        row = self.db.execute("UPDATE nodes SET telemetry=?, last_seen=? WHERE id=? RETURNING boot, state",
                              (json.dumps(telemetry), now or time.time(), node_id)).fetchone()
        return {"boot": row[0], "state": row[1]} if row is not None else None

    def record_heartbeats(self, beats, now=None):
        stored = {}
        for node_id, telemetry in beats:
            row = self.record_heartbeat(node_id, telemetry, now)
            if row is not None:
                stored[node_id] = row
        return stored

    def lock_nodes(self, node_ids, wait_s=None):
        pass   # one writer at a time: SQLite locks the whole file

    def set_epoch(self, node_id, epoch):
        self.db.execute("UPDATE nodes SET epoch=? WHERE id=?", (epoch, node_id))

    def nodes(self):
        return [_node_row(row) for row in self.db.execute("SELECT * FROM nodes ORDER BY id")]

    def node(self, node_id):
        row = self.db.execute("SELECT * FROM nodes WHERE id=?", (node_id,)).fetchone()
        return _node_row(row) if row is not None else None

    # -- workloads and placements -------------------------------------------------------------

    def put_workload(self, wl):
        self.db.execute(
            "INSERT INTO workloads (id, model, rate, input, replicas, constraints, extra) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET model=excluded.model, rate=excluded.rate, input=excluded.input, "
            "replicas=excluded.replicas, constraints=excluded.constraints, extra=excluded.extra",
            (wl["id"], wl["model"], wl["rate"], json.dumps(wl.get("input", {"kind": "samples"})),
             wl.get("replicas", 1), json.dumps(wl.get("constraints", {})),
             json.dumps({k: wl[k] for k in WORKLOAD_EXTRA if k in wl})),
        )

    def remove_workload(self, workload_id):
        self.db.execute("DELETE FROM workloads WHERE id=?", (workload_id,))
        self.db.execute("DELETE FROM placements WHERE workload=?", (workload_id,))

    def workloads(self):
        out = []
        for row in self.db.execute("SELECT * FROM workloads ORDER BY id"):
            wl = dict(row)
            wl["input"] = json.loads(wl["input"])
            wl["constraints"] = json.loads(wl["constraints"])
            wl.update(json.loads(wl.pop("extra", None) or "{}"))
            out.append(wl)
        return out

    def placements(self):
        return [(r["workload"], r["node"]) for r in self.db.execute("SELECT workload, node FROM placements ORDER BY workload, node")]

    def place(self, workload_id, node_id, now=None):
        self.db.execute("INSERT OR IGNORE INTO placements (workload, node, since) VALUES (?,?,?)",
                        (workload_id, node_id, now or time.time()))

    def unplace(self, workload_id, node_id):
        self.db.execute("DELETE FROM placements WHERE workload=? AND node=?", (workload_id, node_id))

    # -- results and events -------------------------------------------------------------------

    def store_result(self, msg, now=None):
        """Store a result once; returns False when (node, boot, seq) was stored already (or was,
        and retention pruned it)."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO results (node, boot, seq, workload, label, truth, score, us, up, received, outputs) "
            "SELECT ?,?,?,?,?,?,?,?,?,?,? WHERE NOT EXISTS "
            "(SELECT 1 FROM result_floors WHERE node=? AND boot=? AND through>=?)",
            (msg["node"], msg["boot"], msg["seq"], msg["wl"], msg["label"], msg.get("truth"), msg["score"],
             msg["us"], msg["up"], now or time.time(), result_outputs(msg), msg["node"], msg["boot"], msg["seq"]),
        )
        return cur.rowcount == 1

    def stored_result(self, node_id, boot, seq):
        row = self.db.execute("SELECT workload, label, truth, score, us, up, outputs FROM results "
                              "WHERE node=? AND boot=? AND seq=?", (node_id, boot, seq)).fetchone()
        return stored_result_row(row[:6], row[6]) if row is not None else None

    def contiguous_results(self, node_id, boot, since=0):
        """The highest seq such that results 1..seq of (node, boot) are all stored (or pruned)."""
        floor = self.db.execute("SELECT through FROM result_floors WHERE node=? AND boot=?", (node_id, boot)).fetchone()
        floor = max(floor[0] if floor else 0, since)
        if self.db.execute("SELECT 1 FROM results WHERE node=? AND boot=? AND seq=?",
                           (node_id, boot, floor + 1)).fetchone() is None:
            return floor
        return self.db.execute(
            "SELECT MIN(seq) FROM results r WHERE node=? AND boot=? AND seq>? AND NOT EXISTS "
            "(SELECT 1 FROM results n WHERE n.node=r.node AND n.boot=r.boot AND n.seq=r.seq+1)",
            (node_id, boot, floor)).fetchone()[0]

    def result_counts(self):
        """{node: results stored}."""
        return {r[0]: r[1] for r in self.db.execute("SELECT node, COUNT(*) FROM results GROUP BY node")}

    def result_totals(self):
        return {r[0]: {"results": r[1], "correct": r[2] or 0, "with_truth": r[3] or 0, "sum_us": r[4] or 0}
                for r in self.db.execute(
                    "SELECT workload, COUNT(*), SUM(CASE WHEN truth IS NOT NULL AND truth = label THEN 1 ELSE 0 END), "
                    "SUM(CASE WHEN truth IS NOT NULL THEN 1 ELSE 0 END), SUM(us) FROM results GROUP BY workload")}

    def recent_results(self, workload, since, limit=5000):
        rows = self.db.execute(
            "SELECT received, score, us, CASE WHEN truth IS NULL THEN NULL WHEN truth = label THEN 1 ELSE 0 END "
            "FROM results WHERE workload=? AND received>=? ORDER BY received DESC LIMIT ?", (workload, since, limit))
        out = [(r[0], r[1], r[2], None if r[3] is None else bool(r[3])) for r in rows]
        out.reverse()
        return out

    # -- retention ----------------------------------------------------------------------------

    def newest_times(self, table, n):
        column = ARRIVAL[table]
        row = self.db.execute("SELECT %s FROM %s ORDER BY %s DESC LIMIT 1 OFFSET ?" % (column, table, column),
                              (n - 1,)).fetchone()
        return row[0] if row else None

    def prune_results(self, before, limit):
        doomed = self.db.execute("SELECT node, boot, seq FROM results WHERE received<? ORDER BY received LIMIT ?",
                                 (before, limit)).fetchall()
        floors = {}
        for node, boot, seq in doomed:
            floors[(node, boot)] = max(seq, floors.get((node, boot), 0))
        self.db.executemany("INSERT INTO result_floors (node, boot, through) VALUES (?,?,?) ON CONFLICT(node, boot) "
                            "DO UPDATE SET through=max(through, excluded.through)",
                            [(node, boot, seq) for (node, boot), seq in floors.items()])
        keys = [tuple(r) for r in doomed]
        self.db.executemany("DELETE FROM results WHERE node=? AND boot=? AND seq=?", keys)
        # A lane's newest accepted position stays: it is where the lane continues from.
        self.db.executemany("DELETE FROM accepted WHERE node=? AND boot=? AND seq=? AND pos < "
                            "(SELECT MAX(pos) FROM accepted b WHERE b.workload=accepted.workload "
                            "AND b.lane=accepted.lane)", keys)
        return len(doomed)

    def prune_events(self, before, limit):
        cur = self.db.execute("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts<? ORDER BY ts LIMIT ?)",
                              (before, limit))
        return cur.rowcount

    # -- leadership: one host, so its clock is the registry's ------------------------------------

    def claim_leadership(self, holder, ttl_s):
        now = time.time()
        cur = self.db.execute("UPDATE leadership SET holder=?, token=token+1, expires=? WHERE id=1 AND "
                              "(holder IS NULL OR expires<?)", (holder, now + ttl_s, now))
        if cur.rowcount != 1:
            return None
        return self.db.execute("SELECT token FROM leadership WHERE id=1").fetchone()[0]

    def renew_leadership(self, holder, token, ttl_s):
        cur = self.db.execute("UPDATE leadership SET expires=? WHERE id=1 AND holder=? AND token=?",
                              (time.time() + ttl_s, holder, token))
        return cur.rowcount == 1

    def check_leadership(self, holder, token):
        # A writer holds SQLite's one write lock until it commits: nobody claims meanwhile.
        return self.db.execute("SELECT 1 FROM leadership WHERE id=1 AND holder=? AND token=?",
                               (holder, token)).fetchone() is not None

    def leadership(self):
        row = self.db.execute("SELECT holder, token, expires FROM leadership WHERE id=1").fetchone()
        if row is None or row[0] is None:
            return None
        return {"holder": row[0], "token": row[1], "expires_in": row[2] - time.time()}

    def add_event(self, node_id, level, kind, msg, data=None, now=None):
        self.db.execute("INSERT INTO events (ts, node, level, kind, msg, data) VALUES (?,?,?,?,?,?)",
                        (now or time.time(), node_id, level, kind, msg, json.dumps(data) if data is not None else None))

    def events(self, node_id=None, limit=50, kinds=None):
        query = "SELECT * FROM events"
        where, args = [], ()
        if node_id:
            where.append("node=?")
            args += (node_id,)
        if kinds:
            where.append("kind IN (%s)" % ",".join("?" * len(kinds)))
            args += tuple(kinds)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id DESC LIMIT ?"
        rows = [dict(r) for r in self.db.execute(query, args + (limit,))]
        for row in rows:
            row["data"] = json.loads(row["data"]) if row["data"] else None
        rows.reverse()
        return rows

    # -- the stream ledger ------------------------------------------------------------------------

    def open_stretches(self, workload=None):
        q = "SELECT workload, lane, node, start FROM streams WHERE until IS NULL"
        args = ()
        if workload is not None:
            q += " AND workload=?"
            args = (workload,)
        return [tuple(r) for r in self.db.execute(q + " ORDER BY workload, lane", args)]

    def newest_stretch(self, workload, node):
        r = self.db.execute("SELECT lane, start, until FROM streams WHERE workload=? AND node=? "
                            "ORDER BY start DESC LIMIT 1", (workload, node)).fetchone()
        return tuple(r) if r else None

    def open_lane(self, workload, node):
        r = self.db.execute("SELECT lane FROM streams WHERE workload=? AND node=? AND until IS NULL",
                            (workload, node)).fetchone()
        return r[0] if r else None

    def lane_marks(self, workload, lane):
        r = self.db.execute("SELECT MAX(pos) FROM accepted WHERE workload=? AND lane=?", (workload, lane)).fetchone()
        s = self.db.execute("SELECT MAX(start) FROM streams WHERE workload=? AND lane=?", (workload, lane)).fetchone()
        return r[0], s[0]

    def open_stretch(self, workload, lane, node, start):
        self.db.execute("INSERT OR REPLACE INTO streams (workload, lane, node, start, until) VALUES (?,?,?,?,NULL)",
                        (workload, lane, node, start))

    def close_stretch(self, workload, lane, node, until):
        self.db.execute("UPDATE streams SET until=? WHERE workload=? AND lane=? AND node=? AND until IS NULL",
                        (until, workload, lane, node))

    def reopen_stretch(self, workload, lane, node, start):
        self.db.execute("UPDATE streams SET until=NULL WHERE workload=? AND lane=? AND node=? AND start=?",
                        (workload, lane, node, start))

    def drop_stretch(self, workload, lane, node, start):
        self.db.execute("DELETE FROM streams WHERE workload=? AND lane=? AND node=? AND start=?",
                        (workload, lane, node, start))

    def owner_lane(self, workload, node, pos):
        r = self.db.execute("SELECT lane FROM streams WHERE workload=? AND node=? AND start<=? AND "
                            "(until IS NULL OR ?<until) ORDER BY start DESC LIMIT 1",
                            (workload, node, pos, pos)).fetchone()
        return r[0] if r else None

    def accept_position(self, workload, lane, pos, node, boot, seq):
        cur = self.db.execute("INSERT OR IGNORE INTO accepted (workload, lane, pos, node, boot, seq) VALUES (?,?,?,?,?,?)",
                              (workload, lane, pos, node, boot, seq))
        return cur.rowcount == 1

    def tracks(self, workload):
        return self.db.execute("SELECT 1 FROM streams WHERE workload=? LIMIT 1", (workload,)).fetchone() is not None

    def accepted_by(self, workload, lane, pos):
        r = self.db.execute("SELECT node FROM accepted WHERE workload=? AND lane=? AND pos=?", (workload, lane, pos)).fetchone()
        return r[0] if r else None

    def forget_streams(self, workload):
        self.db.execute("DELETE FROM streams WHERE workload=?", (workload,))

    # -- what the reconciler keeps across restarts ------------------------------------------------

    def set_resume(self, node_id, workload, pos):
        if pos is None:
            self.db.execute("DELETE FROM resume WHERE node=? AND workload=?", (node_id, workload))
        else:
            self.db.execute("INSERT OR REPLACE INTO resume (node, workload, pos) VALUES (?,?,?)", (node_id, workload, pos))

    def resume_positions(self):
        return {(r[0], r[1]): r[2] for r in self.db.execute("SELECT node, workload, pos FROM resume")}

    def put_move(self, move):
        self.db.execute("INSERT OR REPLACE INTO moves (workload, lane, state, data) VALUES (?,?,?,?)",
                        (move["workload"], move["lane"], move["state"], json.dumps(move)))

    def remove_move(self, workload, lane):
        self.db.execute("DELETE FROM moves WHERE workload=? AND lane=?", (workload, lane))

    def moves(self):
        return [json.loads(r[0]) for r in self.db.execute("SELECT data FROM moves ORDER BY workload, lane")]

    def set_draining(self, node_id, draining):
        if draining:
            self.db.execute("INSERT OR IGNORE INTO drains (node) VALUES (?)", (node_id,))
        else:
            self.db.execute("DELETE FROM drains WHERE node=?", (node_id,))

    def draining(self):
        return {r[0] for r in self.db.execute("SELECT node FROM drains")}

    # -- telemetry history ------------------------------------------------------------------------

    def put_samples(self, samples):
        self.db.executemany(
            "INSERT INTO samples (node, res, ts, cpu, mem_free, battery, rps) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT (node, res, ts) DO UPDATE SET cpu=excluded.cpu, mem_free=excluded.mem_free, "
            "battery=excluded.battery, rps=excluded.rps", samples)

    def samples(self, node_id, res, since):
        return [tuple(r) for r in self.db.execute(
            "SELECT ts, cpu, mem_free, battery, rps FROM samples WHERE node=? AND res=? AND ts>=? ORDER BY ts",
            (node_id, res, since))]

    def prune_samples(self, res, before):
        return self.db.execute("DELETE FROM samples WHERE res=? AND ts<?", (res, before)).rowcount
