"""What a controller replica does with its share of the fleet's messages (controller/fleet/
leadership.py): it records them, and decides nothing. The leader too: it takes its share the
same way, and absorbs what every replica recorded once a tick (FleetController.absorb).

Results go through the same intake as the leader's (the stream ledger's ownership checks, stored
once by (node, boot, seq) whichever replica takes them, acknowledged from the registry's
watermark); hellos, statuses and heartbeats are written to the nodes' rows, where the leader
absorbs them at its next tick; events, update progress and replies go to the audit log. No
placement, no assignment, no lease, no failure verdict: those are the leader's.
"""
import logging
import time

from edgefleet.firmware import protocol
from edgefleet.firmware.errors import ProtocolError

from .. import opwire
from .controller import BAD_MESSAGE_BURST, BAD_MESSAGE_EVERY_S, RateLimit, heartbeat_telemetry, record_rejection
from .ingest import ResultIntake
from .ledger import Ledger
from .liveness import LinkWatch
from .state import FleetState

log = logging.getLogger(__name__)

INGEST = ("hello", "status", "hb", "result", "event", "ota_state", "reply")
# How long a batch waits on rows another replica's transaction holds before it is put back.
LOCK_WAIT_S = 0.5


class Follower:
    def __init__(self, registry, prefix=protocol.DEFAULT_PREFIX, clock=time.time):
        self.registry = registry
        self.prefix = prefix
        self.clock = clock
        # An empty FleetState: the intake writes through it; nothing here reads the fleet from memory.
        self.state = FleetState(registry)
        self.intake = ResultIntake(self.state, Ledger(registry), prefix, shared=True)
        self.rejected = 0
        self.bad_messages = RateLimit(BAD_MESSAGE_BURST, BAD_MESSAGE_EVERY_S)
        # Whether this replica's broker path works, judged by the leader's leases reaching it
        # (every replica subscribes to them): a Last Will is taken at its word only then, as the
        # leader takes its own (liveness.py). Wills a broker sends right after its own stall say
        # nothing about the nodes; the leader's failure detector judges those nodes by silence.
        self.link = LinkWatch(True)
        self.wills_held = 0
        # Messages of a batch that gave up waiting on another replica's locks, to take again.
        self.deferred = []

    results_total = property(lambda self: self.intake.results_total)
    duplicates = property(lambda self: self.intake.duplicates)

    def handle(self, topic, payload):
        try:
            node_id, kind = opwire.parse_topic(self.prefix, topic)
            if kind == "lease":
                protocol.decode(kind, payload)
                self.link.echo(self.clock())
                return []
            if kind not in INGEST:
                return []   # the leader's business (operator requests), or our own messages
            msg = protocol.decode(kind, payload)
            if "node" in msg and msg["node"] != node_id:
                raise ProtocolError("%s: node %r in payload, %r in topic" % (kind, msg["node"], node_id),
                                    kind=kind, field="node")
        except Exception as e:
            self._reject(topic, e)
            return []
        try:
            getattr(self, "_on_" + kind)(node_id, msg, self.clock())
            self.state.commit(durable=kind != "hb")   # as the leader's (controller.py)
        except Exception as e:
            log.exception("handling %s failed", topic)
            self.registry.rollback()
            self.state.committed_events()   # nothing of it was committed
            self.intake.settle(committed=False)
            self._reject(topic, e)
            return []
        self.intake.settle()
        return []

    def handle_batch(self, messages):
        """[(topic, payload)] taken in one transaction: one commit for the lot, where the
        registry's round trips are most of a message's cost. Should any of them fail, the batch
        is rolled back and taken again one by one, so the failing message is rejected alone."""
        now = self.clock()
        rejected, taken = [], []
        for topic, payload in messages:
            try:
                node_id, kind = opwire.parse_topic(self.prefix, topic)
                if kind not in INGEST:
                    continue
                msg = protocol.decode(kind, payload)
                if "node" in msg and msg["node"] != node_id:
                    raise ProtocolError("%s: node %r in payload, %r in topic" % (kind, msg["node"], node_id),
                                        kind=kind, field="node")
            except Exception as e:
                rejected.append((topic, e))
                continue
            taken.append((node_id, kind, msg))
        # Heartbeats are most of the traffic: those of nodes with nothing else in the batch are
        # written in one statement. A node that also said something else keeps its order.
        talking = {node_id for node_id, kind, _ in taken if kind != "hb"}
        beats = [(node_id, msg) for node_id, kind, msg in taken if kind == "hb" and node_id not in talking]
        rest = sorted(((node_id, kind, msg) for node_id, kind, msg in taken if node_id in talking),
                      key=lambda m: m[0])
        try:
            # Every replica's transactions take the nodes' rows first, in the same order, so
            # two of them never wait on each other in a circle; and never wait long on another
            # replica's: one that froze mid-transaction (a leader paused past its lease) holds
            # its rows until it runs again, and this replica must not stand still meanwhile.
            self.registry.lock_nodes({node_id for node_id, _, _ in taken}, LOCK_WAIT_S)
            self._heartbeats(beats, now)
            for node_id, kind, msg in rest:
                getattr(self, "_on_" + kind)(node_id, msg, now)
            self.state.commit(durable=bool(rest))
        except Exception as e:
            self.registry.rollback()
            self.state.committed_events()
            self.intake.settle(committed=False)
            if self.registry.busy(e):   # taken again later (ControllerService puts them back)
                self.deferred.extend(messages)
                return []
            for topic, payload in messages:
                self.handle(topic, payload)
            return []
        self.intake.settle()
        for topic, error in rejected:
            self._reject(topic, error)
        return []

    def _heartbeats(self, beats, now):
        """Heartbeats of different nodes in one write; of several from one node (a replica
        behind by more than a heartbeat period) the last is what the row keeps."""
        latest = {}
        for node_id, msg in beats:
            self.intake.note_dropped(node_id, (msg.get("outbox") or {}).get("oldest"))
            latest[node_id] = msg
        stored = self.registry.record_heartbeats(
            [(node_id, heartbeat_telemetry(msg, now)) for node_id, msg in sorted(latest.items())], now)
        for node_id, msg in sorted(latest.items()):
            self._heard(node_id, msg, stored.get(node_id), now)

    def tick(self):
        """Acknowledge what this replica stored (the leader does the rest)."""
        return self.intake.flush_acks()

    def _reject(self, topic, error):
        record_rejection(self, topic, error)

    # -- per kind: what the registry keeps ------------------------------------------------------

    def _on_hello(self, node_id, msg, now):
        known = self.registry.node(node_id)
        self.registry.upsert_node(node_id, msg["board"], msg["runtime"], msg["fw"], msg["boot"], msg["caps"], "online",
                                  now, slot=msg.get("slot"))
        if known is None or known["boot"] != msg["boot"]:
            self.state.add_event(node_id, "info", "registered", "%s (%s, %s) boot %d" % (
                node_id, msg["board"], msg["runtime"], msg["boot"]), now=now)

    def _on_status(self, node_id, msg, now):
        node = self.registry.node(node_id)
        if node is None or node["state"] == msg["state"]:
            return
        if msg["state"] == "offline" and msg["boot"] < node["boot"]:
            return   # a will from an old connection of a node that came back
        if msg["state"] == "offline" and not self.link.trusts_wills(now):
            self.wills_held += 1
            log.info("will of %s held: no lease of the leader has come through the broker lately", node_id)
            return
        self.registry.set_node_state(node_id, msg["state"])
        level = "warn" if msg["state"] in ("offline", "degraded", "safe") else "info"
        self.state.add_event(node_id, level, "node_" + msg["state"], "%s is %s" % (node_id, msg["state"]), now=now)

    def _on_hb(self, node_id, msg, now):
        # One statement for the common case: the telemetry written, the node's boot and state read.
        self.intake.note_dropped(node_id, (msg.get("outbox") or {}).get("oldest"))
        self._heard(node_id, msg, self.registry.record_heartbeat(node_id, heartbeat_telemetry(msg, now), now), now)

    def _heard(self, node_id, msg, node, now):
        """After a heartbeat's telemetry is written: `node` is the row's {boot, state} as it
        was (None: no row yet), and a new boot or an offline node is registered again."""
        if node is None:
            return   # heartbeats before hello: wait for the hello that follows
        if msg["boot"] != node["boot"]:
            node = self.registry.node(node_id)
            self.registry.upsert_node(node_id, node["board"], node["runtime"], node["fw"], msg["boot"], node["caps"],
                                      "online" if node["state"] == "offline" else node["state"], now,
                                      slot=node.get("slot"))
            self.state.add_event(node_id, "info", "registered", "%s (%s, %s) boot %d, from its heartbeat" % (
                node_id, node["board"], node["runtime"], msg["boot"]), now=now)
            node = self.registry.node(node_id)
        if node["state"] == "offline":
            reported = msg.get("state") or "online"
            self.registry.set_node_state(node_id, reported, now)
            self.state.add_event(node_id, "info", "node_online", "%s heartbeats again (%s)" % (node_id, reported),
                                 now=now)

    def _on_result(self, node_id, msg, now):
        self.intake.take(node_id, msg, now)

    def _on_event(self, node_id, msg, now):
        self.state.add_event(node_id, msg["level"], msg["kind"], msg["msg"], msg.get("data"), now=now)
        if msg["kind"] == "degraded":
            self.registry.set_node_state(node_id, "degraded")

    def _on_ota_state(self, node_id, msg, now):
        if msg["state"] in ("rejected", "reverted", "abandoned", "confirmed", "rolledback"):
            level = "info" if msg["state"] in ("confirmed", "rolledback") else "warn"
            self.state.add_event(node_id, level, "ota_" + msg["state"], "update %s %s%s" % (
                msg["id"], msg["state"], ": " + msg["err"] if msg.get("err") else ""), now=now)

    def _on_reply(self, node_id, msg, now):
        self.state.add_event(node_id, "info" if msg["ok"] else "warn", "reply",
                             "reply %s: %s" % (msg["id"], msg.get("data") if msg["ok"] else msg.get("error")), now=now)
