"""The fleet controller's logic: messages in, fleet state updates and messages out.

`FleetController.handle()` and `tick()` do no network I/O; they return the messages to publish
as `Publish` effects, and the service (controller/fleet/service.py) sends them. That keeps the
protocol logic testable without a broker and the broker code free of decisions.

The controller is a composition of the fleet core's parts, each in its own module:
  state.py       FleetState: nodes, workloads, placements in memory, the registry written behind
  ingest.py      ResultIntake: results admitted through the stream ledger, stored once, acked
  reconciler.py  Reconciler: placement and migration, assignments
  operator.py    OperatorRequests: the CLI's requests over the broker (status, apply, move, drain, ...)
  detector.py    the phi-accrual failure detector
This module routes each message kind to them and drives them once a tick.
"""
import logging
import time

from edgefleet.boards import catalog
from edgefleet.firmware import protocol
from edgefleet.firmware.errors import ProtocolError

from .. import opwire
from ..errors import EdgefleetError, LeadershipLost

from . import migration
from .detector import PhiAccrualDetector
from .effects import Publish
from .ingest import ResultIntake
from .ledger import Ledger
from .liveness import RECONNECT_GRACE_S, LinkWatch, Verdicts
from .operator import OperatorRequests, refusal, reply_effects
from .reconciler import Reconciler
from .snapshot import snapshot
from .state import FleetState

log = logging.getLogger(__name__)

# A node the failure detector has no heartbeat history for (e.g. known only from the registry
# of an earlier controller run) is down after this long without a sign of life.
HEARTBEAT_TIMEOUT_S = 10.0
# A fenced node's assignment is confirmed again at most this often.
RECONFIRM_S = 1.0
# bad_message events: a burst of this many, then one per period, so that a flood of garbage
# cannot fill the registry's event log (the rest are counted in the next event that is written).
BAD_MESSAGE_BURST = 20
BAD_MESSAGE_EVERY_S = 10.0


def heartbeat_telemetry(msg, now):
    """What the registry keeps of a heartbeat."""
    telemetry = {k: msg[k] for k in ("cpu", "mem_free", "mem_total", "power", "temp", "wl", "up", "seq")}
    telemetry["outbox"] = msg.get("outbox")
    telemetry["at"] = now  # when this heartbeat arrived (last_seen also moves on hello)
    telemetry["fenced"] = msg.get("fenced")
    return telemetry


class RateLimit:
    """A token bucket that also counts what it turned away."""

    def __init__(self, burst, every_s):
        self.burst = burst
        self.every_s = every_s
        self.tokens = float(burst)
        self.at = None
        self.suppressed = 0

    def allow(self, now):
        """None when this one is to be dropped; else a note on how many were dropped before it."""
        if self.at is not None:
            # max(): a wall clock stepping back must not drain the bucket.
            self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) / self.every_s)
        self.at = now
        if self.tokens < 1:
            self.suppressed += 1
            return None
        self.tokens -= 1
        note = " (%d more not logged)" % self.suppressed if self.suppressed else ""
        self.suppressed = 0
        return note


def record_rejection(part, topic, error):
    """A message refused by `part` (the fleet core or a replica's Follower): counted, and logged
    and written to the audit log at the rate its `bad_messages` limit allows."""
    part.rejected += 1
    now = part.clock()
    told = part.bad_messages.allow(now)
    if told is None:
        return
    log.warning("rejected message on %.80r: %s%s", topic, error, told)
    part.state.add_event("", "warn", "bad_message", "%.200s: %s: %.300s%s" % (
        topic, type(error).__name__, error, told), now=now)
    part.state.commit()


class FleetController:
    def __init__(self, registry, prefix=protocol.DEFAULT_PREFIX, manifests=None, ctrl_id="ctrl",
                 clock=time.time, settings=None, policy="battery_aware", detector=None, link_watch=False,
                 monotonic=None, shared_ingest=False):
        self.registry = registry
        self.prefix = prefix
        self.manifests = manifests or {}
        self.ctrl_id = ctrl_id
        self.clock = clock
        # The failure detector measures intervals on a clock that never steps back (NTP, an
        # operator's `date`); a test's injected clock serves as both.
        self.monotonic = monotonic or (time.monotonic if clock is time.time else clock)
        self.profiles = {p["name"]: p for p in catalog.all_profiles()}
        self.state = FleetState.load(registry)
        self.ledger = Ledger(registry)
        # shared_ingest: one of several replicas, each taking a share of the fleet's messages
        # (docs/scale.md); the leader absorbs what the others recorded every tick.
        self.shared_ingest = shared_ingest
        self._booted = set()
        self.intake = ResultIntake(self.state, self.ledger, prefix, shared=shared_ingest)
        self.cfg = migration.settings(**(settings or {}))
        self.reconciler = Reconciler(self.state, self.ledger, clock, prefix, self.profiles, self.manifests,
                                     self.cfg, policy)
        self.operator = OperatorRequests(self)
        self.detector = detector or PhiAccrualDetector()
        # link_watch: judge nodes only while the own lease comes back (the service turns it on;
        # a controller fed by hand, as in unit tests, has no broker to echo it).
        self.link = LinkWatch(link_watch)
        self.verdicts = Verdicts()
        self._held = None  # why verdicts are held now, once per episode in the audit log
        self._first_heard = None
        # When the controller's own broker link last came up (set by tick()).
        self.connected_since = 0
        self.rejected = 0
        self.bad_messages = RateLimit(BAD_MESSAGE_BURST, BAD_MESSAGE_EVERY_S)
        self.lease_seq = 0
        self._reconfirmed = {}
        # Called with each batch of audit events audit() publishes (the dashboard's live feed).
        self.on_audit = None

    # What tests, benchmarks and the views read of the parts.
    moves = property(lambda self: self.reconciler.moves)
    draining = property(lambda self: self.reconciler.draining)
    pending = property(lambda self: self.reconciler.pending)
    stuck = property(lambda self: self.reconciler.stuck)
    cooldown = property(lambda self: self.reconciler.cooldown)
    moves_done = property(lambda self: self.reconciler.moves_done)
    results_total = property(lambda self: self.intake.results_total)
    duplicates = property(lambda self: self.intake.duplicates)
    out_of_range = property(lambda self: self.intake.out_of_range)
    replays = property(lambda self: self.intake.replays)
    conflicts = property(lambda self: self.intake.conflicts)

    # -- declared state ---------------------------------------------------------------------

    def declare(self, workloads):
        """Make the declared workloads exactly these (a list of workload dicts)."""
        wanted = {wl["id"] for wl in workloads}
        for wl in self.state.workloads():
            if wl["id"] not in wanted:
                self.state.remove_workload(wl["id"])
                self.ledger.forget_workload(wl["id"])
                self.reconciler.forget_workload(wl["id"])
        for wl in workloads:
            self.state.put_workload(wl)
        self.state.commit()

    def ctrl_status(self, state):
        payload = protocol.encode("ctrl_status", {"v": protocol.VERSION, "state": state, "ctrl": self.ctrl_id})
        return Publish(protocol.ctrl_topic(self.prefix), payload, 1, True)

    # -- incoming ---------------------------------------------------------------------------

    def handle(self, topic, payload):
        """Process one message from the broker; returns the Publish effects it causes.

        No message can stop the controller: one that fails anywhere in its handling is rejected
        (a `bad_message` event) and leaves the registry and the fleet state as they were."""
        try:
            node_id, kind = opwire.parse_topic(self.prefix, topic)
            if kind in ("assign", "ack", "cmd", "ctrl_status", "ota", "op_reply", "audit"):
                return []  # our own messages, echoed back by a wildcard subscription
            if kind == "log":
                return []  # console lines are for operators watching live (`logs --follow`); none are stored
            msg = protocol.decode(kind, payload)
            if kind == "op_req":
                return self._on_op_req(msg)
            if kind == "lease":
                if msg["ctrl"] == self.ctrl_id:
                    self.link.echo(self.clock())
                return []
            if "node" in msg and msg["node"] != node_id:
                raise ProtocolError("%s: node %r in payload, %r in topic" % (kind, msg["node"], node_id),
                                    kind=kind, field="node")
        except Exception as e:  # ProtocolError, or a parser bug: neither may stop the controller
            self._reject(topic, e)
            return []
        try:
            effects = getattr(self, "_on_" + kind)(node_id, msg) or []
            # A heartbeat's commit need not wait for the disk (controller/store/base.py): what
            # else it may have written (a verdict undone, a new boot) is made again by the next.
            self.state.commit(durable=kind != "hb")
        except LeadershipLost:
            raise   # not the message's fault: this replica stops deciding (controller/fleet/leadership.py)
        except Exception as e:
            # Validated input the handlers still choke on is a controller bug; it costs this
            # one message, not the fleet.
            log.exception("handling %s failed", topic)
            self.state.revert()
            self.intake.settle(committed=False)
            self._reject(topic, e)
            return []
        self.intake.settle()
        return effects

    def _on_op_req(self, msg):
        """An operator's request (controller/fleet/operator.py), answered on its reply topic. A
        request that fails leaves no trace but its error reply; one that fails for a bug is
        also a bad_message, like any message."""
        try:
            answer, effects = self.operator.answer(msg["op"], msg["args"])
            self.state.commit()
        except LeadershipLost:
            raise
        except Exception as e:
            self.state.revert()
            self.intake.settle(committed=False)
            if not isinstance(e, (EdgefleetError, TypeError, ValueError, KeyError)):
                log.exception("operator request %s failed", msg["op"])
                self._reject(opwire.request_topic(self.prefix), e)
            return reply_effects(self.prefix, msg["id"], error=refusal(msg["op"], e))
        self.intake.settle()
        return effects + reply_effects(self.prefix, msg["id"], answer)

    def audit(self):
        """The audit events committed since the last call, as `audit` messages for operators
        following the log (`edgefleet events --follow`)."""
        topic = opwire.audit_topic(self.prefix)
        qos, retain = protocol.delivery("audit")
        effects = []
        events = self.state.committed_events()
        if events and self.on_audit is not None:
            self.on_audit(events)
        for ev in events:
            ev = dict(ev, msg=ev["msg"][:1000])
            try:
                payload = protocol.encode("audit", {"v": protocol.VERSION, "ev": ev})
            except (ProtocolError, TypeError, ValueError):
                # Data too big (or deep) for the live feed: the registry has the event whole.
                payload = protocol.encode("audit", {"v": protocol.VERSION, "ev": dict(ev, data=None)})
            effects.append(Publish(topic, payload, qos, retain))
        return effects

    def note_operator(self, who, op, args, outcome):
        """An operator request that came from outside the broker (the dashboard), in the audit
        log with who asked and how it ended; the request's own events say what it did."""
        self.state.add_event("", "info", "operator_request", "%.100s asked %s %.300s: %.300s" % (
            who, op, " ".join("%s=%s" % kv for kv in sorted(args.items())), outcome), now=self.clock())
        self.state.commit()

    def _reject(self, topic, error):
        record_rejection(self, topic, error)

    def _on_hello(self, node_id, msg):
        now = self.clock()
        known = self.state.node(node_id)
        self.state.upsert_node(node_id, msg["board"], msg["runtime"], msg["fw"], msg["boot"], msg["caps"], "online", now,
                               slot=msg.get("slot"))
        self.detector.heartbeat(node_id, *self._on_detector_clock(now, self.heard_since()))
        if known is not None and known["boot"] != msg["boot"]:
            self.reconciler.note_reboot(node_id)
        if known is None or known["boot"] != msg["boot"]:
            self.state.add_event(node_id, "info", "registered",
                                 "%s (%s, %s) boot %d" % (node_id, msg["board"], msg["runtime"], msg["boot"]), now=now)
        return self._placed_and_assigned(node_id)

    def _placed_and_assigned(self, node_id):
        """For a node that (re)booted. Place first: a node booting from its cached assignment
        must not be told to stop it by an assignment sent before the controller had placed
        anything on it. Then its assignment, always: it says where each stream resumes, and the
        broker may have lost the retained copy (a restarted broker without persistence)."""
        if self.shared_ingest:
            self._booted.add(node_id)   # placed and assigned at the next tick
            return []
        effects = self.reconciler.reconcile()
        assign_topic = protocol.node_topic(self.prefix, node_id, "assign")
        if not any(e.topic == assign_topic for e in effects):
            effects.append(self.reconciler.assignment(node_id))
        return effects

    def _on_status(self, node_id, msg):
        node = self.state.node(node_id)
        if node is None:
            return []
        if node["state"] != msg["state"]:
            # A will from an old connection must not mark a node that already came back.
            if msg["state"] == "offline" and msg["boot"] < node["boot"]:
                return []
            if msg["state"] == "offline":
                if not self.link.trusts_wills(self.clock()):
                    # Wills the broker sends just after its own stall (it finds every client past
                    # its keepalive) say nothing about the nodes: silence will tell.
                    log.info("will of %s held: the broker link was unhealthy just now", node_id)
                    return []
                self.detector.last_will(node_id)
            self.state.set_node_state(node_id, msg["state"])
            level = "warn" if msg["state"] in ("offline", "degraded", "safe") else "info"
            self.state.add_event(node_id, level, "node_" + msg["state"], "%s is %s" % (node_id, msg["state"]),
                                 now=self.clock())
        return self._reconcile_now()

    def _on_hb(self, node_id, msg):
        node = self.state.node(node_id)
        if node is None:
            return []  # heartbeats before hello: wait for the hello that follows
        now = self.clock()
        effects = []
        if msg["boot"] != node["boot"]:
            # The node rebooted and its hello was lost (sent while the broker restarted, before
            # this controller had resubscribed): register the new boot from its heartbeat.
            effects.extend(self._new_boot(node_id, node, msg["boot"], now))
            node = self.state.node(node_id)
        self.state.record_heartbeat(node_id, heartbeat_telemetry(msg, now), now)
        self.detector.heartbeat(node_id, *self._on_detector_clock(now, self.heard_since()))
        self.reconciler.triggers.observe(node_id, msg["cpu"], now)
        self.intake.note_dropped(node_id, (msg.get("outbox") or {}).get("oldest"))
        effects.extend(self.reconciler.observe_moves(node_id, msg["wl"], now))
        if msg.get("fenced") and now - self._reconfirmed.get(node_id, 0) >= RECONFIRM_S:
            # Fenced: the node holds its results until the controller confirms what it runs.
            self._reconfirmed[node_id] = now
            effects.append(self.reconciler.assignment(node_id))
        if node["state"] == "offline":
            # Back from silence, a node is what its heartbeat says (safe, degraded), not simply
            # online; otherwise its state changes come as `status` messages (sent on every
            # change and on every connect).
            reported = msg.get("state") or "online"
            self.state.set_node_state(node_id, reported, now)
            self.state.add_event(node_id, "info", "node_online", "%s heartbeats again (%s)" % (node_id, reported),
                                 now=now)
            effects.extend(self._reconcile_now())
        return effects

    def _new_boot(self, node_id, node, boot, now):
        self.state.upsert_node(node_id, node["board"], node["runtime"], node["fw"], boot, node["caps"],
                               "online" if node["state"] == "offline" else node["state"], now, slot=node.get("slot"))
        self.reconciler.note_reboot(node_id)
        self.state.add_event(node_id, "info", "registered", "%s (%s, %s) boot %d, from its heartbeat" % (
            node_id, node["board"], node["runtime"], boot), now=now)
        return self._placed_and_assigned(node_id)

    def _on_result(self, node_id, msg):
        self.intake.take(node_id, msg, self.clock())
        return []

    def _on_event(self, node_id, msg):
        self.state.add_event(node_id, msg["level"], msg["kind"], msg["msg"], msg.get("data"), now=self.clock())
        if msg["kind"] == "degraded":
            # The node's supervisor gave up on a crash-looping child: a migration trigger.
            self.state.set_node_state(node_id, "degraded")
        return []

    def _on_ota_state(self, node_id, msg):
        # Update progress is the deployer's business (controller/deploy/deployer.py); the registry
        # keeps the outcomes in the node's event log.
        if msg["state"] in ("rejected", "reverted", "abandoned", "confirmed", "rolledback"):
            level = "info" if msg["state"] in ("confirmed", "rolledback") else "warn"
            self.state.add_event(node_id, level, "ota_" + msg["state"], "update %s %s%s" % (
                msg["id"], msg["state"], ": " + msg["err"] if msg.get("err") else ""), now=self.clock())
        return []

    def _on_reply(self, node_id, msg):
        self.state.add_event(node_id, "info" if msg["ok"] else "warn", "reply",
                             "reply %s: %s" % (msg["id"], msg.get("data") if msg["ok"] else msg.get("error")),
                             now=self.clock())
        return []

    def _reconcile_now(self):
        """Placement after a node's state changed: at once, or - one of several replicas, where a
        fleet of thousands reconnecting would mean thousands of placement rounds - at the next
        tick, which places once for all of them."""
        return [] if self.shared_ingest else self.reconciler.reconcile()

    def _place_booted(self):
        """The nodes that (re)booted since the last tick: placed, then each sent its assignment
        (as _placed_and_assigned does for one at once)."""
        if not self._booted:
            return []
        effects = self.reconciler.reconcile()
        topics = {e.topic for e in effects}
        for node_id in sorted(self._booted):
            if protocol.node_topic(self.prefix, node_id, "assign") not in topics and self.state.node(node_id):
                effects.append(self.reconciler.assignment(node_id))
        self._booted.clear()
        return effects

    # -- shared ingest (controller replicas, controller/fleet/leadership.py) ---------------------

    def absorb(self):
        """What the other replicas recorded of the nodes since the last tick (they take their
        share of hellos, statuses and heartbeats and write them to the registry): taken into the
        leader's memory and acted on as if this replica had heard it."""
        effects = []
        now = self.clock()
        for row in self.registry.nodes():
            node_id = row["id"]
            known = self.state.node(node_id)
            if known is None or known["boot"] != row["boot"]:
                self.state.adopt_node(row)
                if known is not None:
                    self.reconciler.note_reboot(node_id)
                self.detector.heartbeat(node_id, *self._on_detector_clock(row["last_seen"], self.heard_since()))
                effects.extend(self._placed_and_assigned(node_id))
                continue
            if known["state"] != row["state"]:
                self.state.adopt_node(row)
                if row["state"] == "offline":
                    self.detector.last_will(node_id)
                effects.extend(self._reconcile_now())
            telemetry = row["telemetry"]
            at = telemetry.get("at")
            if at is not None and at != known["telemetry"].get("at"):
                self.state.adopt_node(row)
                self.detector.heartbeat(node_id, *self._on_detector_clock(at, self.heard_since()))
                self.reconciler.triggers.observe(node_id, telemetry["cpu"], at)
                effects.extend(self.reconciler.observe_moves(node_id, telemetry["wl"], now))
                if telemetry.get("fenced") and now - self._reconfirmed.get(node_id, 0) >= RECONFIRM_S:
                    self._reconfirmed[node_id] = now
                    effects.append(self.reconciler.assignment(node_id))
        return effects

    # -- periodic ---------------------------------------------------------------------------

    def tick(self, connected_since=None):
        """Time-driven work: silent nodes, acks, placement. Call about once a second.

        connected_since: when the controller's own broker link last came up. A node is silent
        only if it was silent while the controller could hear it; after the controller itself
        was cut off, every node gets a full timeout to show up again.
        """
        effects = self.absorb() + self._place_booted() if self.shared_ingest else []
        now = self.clock()
        self.connected_since = connected_since or 0
        heard_since = self.heard_since()
        if self._first_heard is None:
            self._first_heard = heard_since   # the controller's start: no one is reconnecting
        if not self.link.healthy(now):
            self._hold(now, "the controller's own lease has not come back through the broker for %.0f s" % (
                now - (self.link.last_echo or heard_since)))
        elif heard_since > self._first_heard and now - heard_since < RECONNECT_GRACE_S:
            self._hold(now, "the controller hears the fleet again since %.0f s; nodes reconnect with backoff" % (
                now - heard_since))
        else:
            # Silence counts only up to when the broker path was last seen working (the own lease's
            # last echo, a tick ago at most): a broker that froze just now silences every node a
            # moment before the controller can tell its own link is stuck.
            judge_at = self.link.judge_time(now)
            suspects, live = [], 0
            for node in self.state.nodes():
                if node["state"] == "offline":
                    continue
                live += 1
                if node["id"] in self.detector.history:
                    down = self.detector.is_down(node["id"], *self._on_detector_clock(judge_at, heard_since))
                else:
                    down = judge_at - max(node["last_seen"], heard_since) > HEARTBEAT_TIMEOUT_S
                if down:
                    suspects.append(node)
            willed = {n["id"] for n in suspects if n["id"] in self.detector.willed}
            dead, held = self.verdicts.decide([n["id"] for n in suspects], willed, live, now)
            for node in suspects:
                if node["id"] in dead:
                    heard = max(node["last_seen"], heard_since)
                    self.state.set_node_state(node["id"], "offline")
                    phi = self.detector.phi(node["id"], *self._on_detector_clock(now, heard_since))
                    self.state.add_event(node["id"], "warn", "node_offline", "%s silent for %.1f s (phi %.1f)" % (
                        node["id"], now - heard, phi), now=now)
            if held:
                self._hold(now, held)
            else:
                self._held = None
        effects.append(self.lease())
        effects.extend(self.intake.flush_acks())
        effects.extend(self.reconciler.reconcile())
        effects.extend(self.reconciler.migrate())
        self.state.commit()
        return effects

    def _on_detector_clock(self, *wall_times):
        """Wall-clock instants (as `clock` gives them) on the detector's monotonic clock."""
        offset = self.clock() - self.monotonic()
        return tuple(t - offset for t in wall_times)

    def heard_since(self):
        """Since when the controller could hear the fleet: its broker link up and its own lease
        coming back."""
        return max(self.connected_since, self.link.healthy_since)

    def _hold(self, now, why):
        """Failure verdicts are held (docs/reliability.md): said once per episode."""
        if self._held is None:
            log.warning("failure verdicts held: %s", why)
            self.state.add_event("", "warn", "verdicts_held", why, now=now)
        self._held = why

    def lease(self):
        """The controller's lease (fencing, docs/placement.md): once per tick, not retained."""
        self.lease_seq += 1
        payload = protocol.encode("lease", {"v": protocol.VERSION, "ctrl": self.ctrl_id, "seq": self.lease_seq})
        return Publish(protocol.lease_topic(self.prefix), payload, *protocol.delivery("lease"))

    def flush_acks(self):
        return self.intake.flush_acks()

    def snapshot(self):
        """The fleet as plain data, for the CLI's views and the demo's summary."""
        return snapshot(self.state, self.reconciler, self.intake)
