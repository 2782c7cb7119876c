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



class Ledger:
    """The stream ledger's logic over the registry's stretches and accepted positions, with the
    next position of each lane cached (the hot path of every result)."""

    def __init__(self, store):
        self.store = store
        self._next = {}  # (workload, lane) -> first position not yet accepted (cache)

    def open_rows(self, workload=None):
        """[(workload, lane, node, start)] of every open-ended stretch."""
        return self.store.open_stretches(workload)

    def row(self, workload, node):
        """The newest stretch of `workload` owned by `node`: (lane, start, until) or None."""
        return self.store.newest_stretch(workload, node)

    def lane_of(self, workload, node):
        """The lane `node` currently owns open-ended, or None."""
        return self.store.open_lane(workload, node)

    def free_lane(self, workload, replicas, taken=None):
        """The lowest lane of `workload` no node owns open-ended; `taken`: those lanes, when the
        caller keeps them (placing thousands of replicas in one round)."""
        if taken is None:
            taken = {lane for _, lane, _, _ in self.open_rows(workload)}
        for lane in range(replicas):
            if lane not in taken:
                return lane
        return len(taken)

    def next_pos(self, workload, lane):
        key = (workload, lane)
        if key not in self._next:
            accepted, start = self.store.lane_marks(workload, lane)
            self._next[key] = max(-1 if accepted is None else accepted, -1) + 1
            if start is not None and accepted is None:
                self._next[key] = max(self._next[key], start)
        return self._next[key]

    def open(self, workload, lane, node, start):
        self.store.open_stretch(workload, lane, node, start)

    def close(self, workload, lane, node, until):
        self.store.close_stretch(workload, lane, node, until)

    def reopen(self, workload, lane, node, start):
        """Undo a close (an aborted move): the stretch from `start` is open-ended again."""
        self.store.reopen_stretch(workload, lane, node, start)

    def drop(self, workload, lane, node, start):
        self.store.drop_stretch(workload, lane, node, start)

    def owner_lane(self, workload, node, pos):
        """The lane in which `node` owns position `pos` of `workload`, or None."""
        return self.store.owner_lane(workload, node, pos)

    def accept(self, workload, lane, pos, node, boot, seq):
        """True when the position was not accepted before (now it is)."""
        if not self.store.accept_position(workload, lane, pos, node, boot, seq):
            return False
        key = (workload, lane)
        if key in self._next and pos + 1 > self._next[key]:
            self._next[key] = pos + 1
        elif key not in self._next:
            self.next_pos(workload, lane)
        return True

    def tracks(self, workload):
        return self.store.tracks(workload)

    def accepted_by(self, workload, lane, pos):
        return self.store.accepted_by(workload, lane, pos)

    def forget_workload(self, workload):
        self.store.forget_streams(workload)
        for key in [k for k in self._next if k[0] == workload]:
            del self._next[key]
