"""The fleet as the controller knows it, in memory: nodes with their latest telemetry, declared
workloads, placements, and result tallies.

Loaded once from the registry when the controller starts; placement, migration and the views
read it, never the registry. Every change goes through a method here, which updates memory and
writes the registry behind it (the registry is for durability, audit and other processes), so
the two cannot drift apart while the controller runs.
"""
import copy
import time

from ..store.base import WORKLOAD_EXTRA

EVENTS_KEPT = 1000


class FleetState:
    def __init__(self, store):
        self.store = store
        self._nodes = {}          # id -> node dict (as the registry stores it)
        self._workloads = {}      # id -> workload dict
        self._placements = set()  # (workload, node)
        self._by_node = {}        # node -> {workload}: the same, indexed
        self._results_by_node = {}
        self._totals = {}         # workload -> {results, correct, with_truth, sum_us}
        # Audit events written since the last commit, and those committed but not yet taken by
        # committed_events() (the controller publishes them for `events --follow`).
        self._events_written = []
        self._events_committed = []

    @classmethod
    def load(cls, store):
        state = cls(store)
        state._read(store)
        return state

    def _read(self, store):
        self._nodes = {n["id"]: n for n in store.nodes()}
        self._workloads = {w["id"]: w for w in store.workloads()}
        self._placements = set(store.placements())
        self._by_node = {}
        for wid, nid in self._placements:
            self._by_node.setdefault(nid, set()).add(wid)
        self._results_by_node = store.result_counts()
        self._totals = store.result_totals()

    def revert(self):
        """Back to what the registry last committed, in the registry and in memory: after a
        message whose handling failed halfway, so that it leaves no trace. In place, because the
        controller's parts all hold this object."""
        self.store.rollback()
        self._events_written = []
        self._read(self.store)

    # -- reads (copies: callers may annotate what they get) ----------------------------------

    def node(self, node_id):
        node = self._nodes.get(node_id)
        return dict(node) if node is not None else None

    def nodes(self):
        return [dict(self._nodes[k]) for k in sorted(self._nodes)]

    def workload(self, workload_id):
        wl = self._workloads.get(workload_id)
        return copy.deepcopy(wl) if wl is not None else None

    def workloads(self):
        return [copy.deepcopy(self._workloads[k]) for k in sorted(self._workloads)]

    def placements(self):
        return sorted(self._placements)

    def placed_on(self, node_id):
        """The workloads placed on a node, sorted (an index: assignments are made per node, and
        a fleet has thousands)."""
        return sorted(self._by_node.get(node_id, ()))

    def hosts(self, workload_id):
        return sorted(n for w, n in self._placements if w == workload_id)

    def placed(self, workload_id, node_id):
        return (workload_id, node_id) in self._placements

    def result_counts(self):
        return dict(self._results_by_node)

    def result_count(self, node_id):
        return self._results_by_node.get(node_id, 0)

    def result_stats(self):
        """Per workload: results, accuracy where truth is known, mean inference time."""
        return {wid: {"results": t["results"], "accuracy": t["correct"] / t["with_truth"] if t["with_truth"] else None,
                      "mean_us": t["sum_us"] / t["results"] if t["results"] else None}
                for wid, t in self._totals.items()}

    # -- writes: memory first, then the registry ------------------------------------------------

    def upsert_node(self, node_id, board, runtime, fw, boot, caps, state, now, slot=None):
        node = self._nodes.get(node_id) or {"id": node_id, "telemetry": {}, "epoch": 0}
        node.update(board=board, runtime=runtime, fw=fw, slot=slot, boot=boot, caps=caps, state=state, last_seen=now)
        self._nodes[node_id] = node
        self.store.upsert_node(node_id, board, runtime, fw, boot, caps, state, now, slot=slot)

    def set_node_state(self, node_id, state, now=None):
        node = self._nodes.get(node_id)
        if node is None:
            return False
        node["state"] = state
        if now is not None:
            node["last_seen"] = now
        self.store.set_node_state(node_id, state, now)
        return True

    def record_heartbeat(self, node_id, telemetry, now):
        node = self._nodes.get(node_id)
        if node is None:
            return
        node["telemetry"] = telemetry
        node["last_seen"] = now
        self.store.record_heartbeat(node_id, telemetry, now)

    def set_epoch(self, node_id, epoch):
        if node_id in self._nodes:
            self._nodes[node_id]["epoch"] = epoch
        self.store.set_epoch(node_id, epoch)

    def put_workload(self, wl):
        self.store.put_workload(wl)
        # Kept as the registry gives it back, so a restarted controller sees the same workload.
        stored = {k: copy.deepcopy(wl[k]) for k in WORKLOAD_EXTRA if k in wl}
        stored.update(id=wl["id"], model=wl["model"], rate=float(wl["rate"]), replicas=int(wl.get("replicas", 1)),
                      input=copy.deepcopy(wl.get("input", {"kind": "samples"})),
                      constraints=copy.deepcopy(wl.get("constraints", {})))
        self._workloads[wl["id"]] = stored

    def remove_workload(self, workload_id):
        self._workloads.pop(workload_id, None)
        self._placements = {(w, n) for w, n in self._placements if w != workload_id}
        for workloads in self._by_node.values():
            workloads.discard(workload_id)
        self.store.remove_workload(workload_id)

    def adopt_node(self, row):
        """A node as the registry holds it, written there by another controller replica: into
        memory only."""
        self._nodes[row["id"]] = dict(row)

    def place(self, workload_id, node_id, now):
        self._placements.add((workload_id, node_id))
        self._by_node.setdefault(node_id, set()).add(workload_id)
        self.store.place(workload_id, node_id, now)

    def unplace(self, workload_id, node_id):
        self._placements.discard((workload_id, node_id))
        self._by_node.get(node_id, set()).discard(workload_id)
        self.store.unplace(workload_id, node_id)

    def store_result(self, msg, now):
        """Store a result once; False when (node, boot, seq) was stored already."""
        if not self.store.store_result(msg, now):
            return False
        self._results_by_node[msg["node"]] = self._results_by_node.get(msg["node"], 0) + 1
        t = self._totals.setdefault(msg["wl"], {"results": 0, "correct": 0, "with_truth": 0, "sum_us": 0})
        t["results"] += 1
        t["sum_us"] += msg["us"]
        if msg.get("truth") is not None:
            t["with_truth"] += 1
            t["correct"] += msg["truth"] == msg["label"]
        return True

    def add_event(self, node_id, level, kind, msg, data=None, now=None):
        """The audit log is written, never read back, by the controller."""
        now = now or time.time()
        self.store.add_event(node_id, level, kind, msg, data, now=now)
        self._events_written.append({"ts": now, "node": node_id or "", "level": level, "kind": kind, "msg": msg,
                                     "data": data})

    def commit(self, durable=True):
        self.store.commit(durable)
        self._events_committed.extend(self._events_written)
        self._events_written = []
        # A controller driven without a service (tests, benches) never takes them: keep the last few.
        del self._events_committed[:-EVENTS_KEPT]

    def committed_events(self):
        """Audit events committed since the last call, oldest first."""
        events, self._events_committed = self._events_committed, []
        return events
