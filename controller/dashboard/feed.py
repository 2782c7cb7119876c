"""What the controller tells the dashboard as it happens: the observer ControllerService calls in
its own thread after each message it handled, each audit batch it committed and each tick.

It turns them into live updates for the browsers (hub.py), keeps what the registry does not
(each node's console tail, update progress) in bounded memory, records the
telemetry history (history.py) and times the controller's ingest and ticks for /metrics. Every
hook is cheap and bounded: it runs between the controller's decisions.
"""
import collections
import logging
import time

from edgefleet.firmware import protocol
from edgefleet.firmware.errors import ProtocolError

from .. import opwire
from ..fleet.snapshot import node_view
from .history import HistoryRecorder

log = logging.getLogger(__name__)

LOG_LINES_KEPT = 200        # console lines per node
OTA_KEPT = 20               # updates whose per-node progress is kept
NODE_KINDS = ("hello", "hb", "status", "event", "reply")
# Histogram buckets (seconds) for handling one message and for one tick.
TIMING_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Timings:
    """A histogram's counts, filled in the controller's thread and read by /metrics."""

    def __init__(self, buckets=TIMING_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds):
        i = 0
        while i < len(self.buckets) and seconds > self.buckets[i]:
            i += 1
        self.counts[i] += 1
        self.total += seconds
        self.n += 1


class LiveFeed:
    def __init__(self, hub, prefix=protocol.DEFAULT_PREFIX, clock=time.time):
        self.hub = hub
        self.prefix = prefix
        self.clock = clock
        self.history = None          # made when the controller's registry is known (attach)
        self.fleet = None
        self.logs = collections.defaultdict(lambda: collections.deque(maxlen=LOG_LINES_KEPT))
        self.ota = collections.OrderedDict()   # update id -> {node: {state, off, ver, err, at}}
        self.rps = {}                # node -> results/s in its last closed 10 s bucket
        self.snapshot = None         # the fleet as of the last tick
        self.ingest = Timings()
        self.ticks = Timings()
        self.messages = collections.Counter()   # kind -> messages handled
        self._moves = {}
        self.cpu_s = 0.0             # thread CPU these hooks took (the dashboard's share of the controller thread)

    # -- hooks, in the controller's thread ---------------------------------------------------

    def attach(self, fleet):
        """The controller is up: `fleet` is its FleetController, whose registry this thread owns."""
        self.fleet = fleet
        self.history = HistoryRecorder(fleet.registry)
        # The fleet as the registry has it, for a page opened before the first tick.
        self.snapshot = fleet.snapshot()

    def message(self, topic, payload, seconds):
        started = time.thread_time()
        try:
            node_id, kind = opwire.parse_topic(self.prefix, topic)
        except ProtocolError:
            return
        self.messages[kind] += 1
        self.ingest.observe(seconds)
        if kind == "log":
            self._log(payload)
        elif kind == "ota_state":
            self._ota(payload)
        elif kind in NODE_KINDS:
            node = self.fleet.state.node(node_id)
            if node is not None:
                if kind == "hb":
                    self._record(node)
                self.hub.publish("node", self.node_row(node))
        self.cpu_s += time.thread_time() - started

    def audited(self, events):
        """Audit events the controller just committed, oldest first."""
        started = time.thread_time()
        for ev in events:
            self.hub.publish("event", dict(ev, msg=ev["msg"][:1000], data=None))
        self.cpu_s += time.thread_time() - started

    def tick(self, snapshot, seconds):
        started = time.thread_time()
        self.ticks.observe(seconds)
        self.snapshot = snapshot
        self._track_moves(snapshot["moves"])
        if self.history is not None and self.history.prune(self.clock()):
            self.fleet.registry.commit()
        for node in snapshot["nodes"]:
            node["rps"] = self.rps.get(node["id"])
        self.hub.publish("fleet", self.fleet_view())
        self.cpu_s += time.thread_time() - started

    # -- what the hooks keep -------------------------------------------------------------------

    def node_row(self, node):
        state = self.fleet.state
        row = node_view(node, state.placed_on(node["id"]), state.result_count(node["id"]),
                        self.fleet.reconciler.draining)
        row["rps"] = self.rps.get(node["id"])
        row["hb_at"] = node["telemetry"].get("at")
        row["hb_seq"] = node["telemetry"].get("seq")
        return row

    def fleet_view(self):
        snap = self.snapshot or {"nodes": [], "workloads": [], "moves": []}
        return {"nodes": snap["nodes"], "workloads": snap["workloads"], "moves": snap["moves"],
                "results_received": snap.get("results_received", 0), "at": self.clock()}

    def _record(self, node):
        tel = node["telemetry"]
        results = self.fleet.state.result_counts().get(node["id"], 0)
        done = self.history.heartbeat(node["id"], tel.get("at") or self.clock(), tel.get("cpu") or 0.0,
                                      tel.get("mem_free"), tel.get("power"), results)
        if done:
            # Committed now, on their own: the controller has committed the heartbeat already, and
            # a later message whose handling fails rolls back only what it wrote.
            self.fleet.registry.commit()
        for sample in done:
            if sample[1] == self.history.tiers[0][0]:
                self.rps[node["id"]] = sample[6]

    def _log(self, payload):
        try:
            msg = protocol.decode("log", payload)
        except ProtocolError:
            return
        entry = {"node": msg["node"], "boot": msg["boot"], "up": msg["up"], "lines": msg["lines"][-50:],
                 "dropped": msg.get("dropped") or 0, "at": self.clock()}
        self.logs[msg["node"]].extend(entry["lines"])
        self.hub.publish("log", entry)

    def _ota(self, payload):
        try:
            msg = protocol.decode("ota_state", payload)
        except ProtocolError:
            return
        nodes = self.ota.setdefault(msg["id"], {})
        self.ota.move_to_end(msg["id"])
        while len(self.ota) > OTA_KEPT:
            self.ota.popitem(last=False)
        nodes[msg["node"]] = {"state": msg["state"], "off": msg["off"], "ver": msg.get("ver"), "err": msg.get("err"),
                              "at": self.clock()}
        self.hub.publish("ota", {"id": msg["id"], "node": msg["node"], **nodes[msg["node"]]})

    def _track_moves(self, moves):
        """Migrations as they start, change state and end, with why each happened (trigger,
        from, to): a workload's page redraws on each (its history is the audit log's)."""
        current = {(m["workload"], m["lane"]): m for m in moves}
        for key, move in current.items():
            if self._moves.get(key) != move["state"]:
                self._moves[key] = move["state"]
                self.hub.publish("migration", dict(move, ended=False))
        for key in set(self._moves) - set(current):
            del self._moves[key]
            self.hub.publish("migration", {"workload": key[0], "lane": key[1], "ended": True})
