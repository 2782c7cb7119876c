"""The fleet controller's logic: messages in, registry updates and messages out.

`FleetController.handle()` and `tick()` do no network I/O; they return the messages to
publish as `Publish` tuples, and the service (controller/fleet/service.py) sends them. That keeps the
protocol logic testable without a broker and the broker code free of decisions.
"""
import logging
import time
from collections import namedtuple

from edgefleet.boards import catalog
from edgefleet.firmware import protocol
from edgefleet.firmware.errors import ProtocolError

from . import commands, migration, placement
from .detector import PhiAccrualDetector
from ..errors import EdgefleetError, NotFound, PlacementError
from .ledger import Ledger

log = logging.getLogger(__name__)

Publish = namedtuple("Publish", "topic payload qos retain")

# A node the failure detector has no heartbeat history for (e.g. known only from the registry
# of an earlier controller run) is down after this long without a sign of life.
HEARTBEAT_TIMEOUT_S = 10.0
# A fenced node's assignment is confirmed again at most this often.
RECONFIRM_S = 2.0


class FleetController:
    def __init__(self, registry, prefix=protocol.DEFAULT_PREFIX, manifests=None, ctrl_id="ctrl",
                 clock=time.time, settings=None, policy="battery_aware", detector=None):
        self.registry = registry
        self.prefix = prefix
        self.manifests = manifests or {}
        self.ctrl_id = ctrl_id
        self.clock = clock
        self.profiles = {p["name"]: p for p in catalog.all_profiles()}
        self.pending = {}
        # (node, boot) -> highest seq such that every result up to it is stored
        self._contiguous = {}
        self._ahead = {}
        self._acks_due = set()
        self.results_total = 0
        self.duplicates = 0
        # When the controller's own broker link last came up (set by tick()).
        self.connected_since = 0
        self.rejected = 0
        # Placement and migration (docs/placement.md).
        self.cfg = migration.settings(**(settings or {}))
        self.policy = policy
        self.detector = detector or PhiAccrualDetector()
        self.triggers = migration.TriggerWatch(self.cfg)
        self.cooldown = migration.Cooldown(self.cfg)
        self.moves = {}      # (workload, lane) -> migration.Move in progress
        self.stuck = {}      # workload -> why a triggered move found no node
        self.draining = set()
        self.ledger = Ledger(registry.db)
        commands.ensure(registry.db)
        self.out_of_range = 0  # results dropped because their node did not own that input
        self.replays = 0       # results for a position the same node had delivered already
        self.moves_done = 0
        self.lease_seq = 0
        self._resume = {}    # (node, workload) -> stream position a rebooted node resumes from
        self._reconfirmed = {}

    # -- declared state ---------------------------------------------------------------------

    def declare(self, workloads):
        """Make the registry's workloads exactly these (a list of workload dicts)."""
        wanted = {wl["id"] for wl in workloads}
        for wl in self.registry.workloads():
            if wl["id"] not in wanted:
                self.registry.remove_workload(wl["id"])
                self.ledger.forget_workload(wl["id"])
                for key in [k for k in self.moves if k[0] == wl["id"]]:
                    del self.moves[key]
        for wl in workloads:
            self.registry.put_workload(wl)
        self.registry.commit()

    def ctrl_status(self, state):
        payload = protocol.encode("ctrl_status", {"v": protocol.VERSION, "state": state, "ctrl": self.ctrl_id})
        return Publish(protocol.ctrl_topic(self.prefix), payload, 1, True)

    # -- incoming ---------------------------------------------------------------------------

    def handle(self, topic, payload):
        """Process one message from the broker; returns the Publish effects it causes."""
        try:
            node_id, kind = protocol.parse_topic(self.prefix, topic)
            if kind in ("assign", "ack", "cmd", "ctrl_status", "ota", "lease"):
                return []  # our own messages, echoed back by a wildcard subscription
            msg = protocol.decode(kind, payload)
            if "node" in msg and msg["node"] != node_id:
                raise ProtocolError("%s: node %r in payload, %r in topic" % (kind, msg["node"], node_id),
                                    kind=kind, field="node")
        except ProtocolError as e:
            self.rejected += 1
            log.warning("rejected message on %s: %s", topic, e)
            self.registry.add_event("", "warn", "bad_message", "%s: %s" % (topic, e), now=self.clock())
            return []
        handler = getattr(self, "_on_" + kind)
        effects = handler(node_id, msg) or []
        self.registry.commit()
        return effects

    def _on_hello(self, node_id, msg):
        now = self.clock()
        known = self.registry.node(node_id)
        self.registry.upsert_node(node_id, msg["board"], msg["runtime"], msg["fw"], msg["boot"], msg["caps"], "online", now)
        self.detector.heartbeat(node_id, now)
        if known is not None and known["boot"] != msg["boot"]:
            # A rebooted node's workers start over: they resume at the first input not yet
            # accepted instead of replaying their stream from its start.
            for wid, nid in self.registry.placements():
                row = self.ledger.row(wid, node_id) if nid == node_id else None
                if row is not None and row[2] is None:
                    self._resume[(node_id, wid)] = max(row[1], self.ledger.next_pos(wid, row[0]))
        if known is None or known["boot"] != msg["boot"]:
            self.registry.add_event(node_id, "info", "registered",
                                    "%s (%s, %s) boot %d" % (node_id, msg["board"], msg["runtime"], msg["boot"]), now=now)
        # Place first: a node booting from its cached assignment must not be told to stop it
        # by an assignment sent before the controller had placed anything on it.
        effects = self.reconcile()
        assign_topic = protocol.node_topic(self.prefix, node_id, "assign")
        if not any(e.topic == assign_topic for e in effects):
            # Re-send its assignment so it runs what the registry says, even if the broker lost
            # the retained copy (a restarted broker without persistence).
            effects.append(self._assignment(node_id))
        return effects

    def _on_status(self, node_id, msg):
        node = self.registry.node(node_id)
        if node is None:
            return []
        if node["state"] != msg["state"]:
            # A will from an old connection must not mark a node that already came back.
            if msg["state"] == "offline" and msg["boot"] < node["boot"]:
                return []
            if msg["state"] == "offline":
                self.detector.last_will(node_id)
            self.registry.set_node_state(node_id, msg["state"])
            level = "warn" if msg["state"] in ("offline", "degraded", "safe") else "info"
            self.registry.add_event(node_id, level, "node_" + msg["state"], "%s is %s" % (node_id, msg["state"]),
                                    now=self.clock())
        return self.reconcile()

    def _on_hb(self, node_id, msg):
        node = self.registry.node(node_id)
        if node is None:
            return []  # heartbeats before hello: wait for the hello that follows
        now = self.clock()
        telemetry = {k: msg[k] for k in ("cpu", "mem_free", "mem_total", "power", "temp", "wl", "up", "seq")}
        telemetry["outbox"] = msg.get("outbox")
        telemetry["at"] = now  # when this heartbeat arrived (last_seen also moves on hello)
        telemetry["fenced"] = msg.get("fenced")
        self.registry.record_heartbeat(node_id, telemetry, now)
        self.detector.heartbeat(node_id, now)
        self.triggers.observe(node_id, msg["cpu"], now)
        self._skip_dropped(node_id, (msg.get("outbox") or {}).get("oldest"))
        effects = self._observe_moves(node_id, msg["wl"], now)
        if msg.get("fenced") and now - self._reconfirmed.get(node_id, 0) >= RECONFIRM_S:
            # Fenced: the node holds its results until the controller confirms what it runs.
            self._reconfirmed[node_id] = now
            effects.append(self._assignment(node_id))
        if node["state"] == "offline":
            self.registry.set_node_state(node_id, "online", now)
            self.registry.add_event(node_id, "info", "node_online", "%s heartbeats again" % node_id, now=now)
            effects.extend(self.reconcile())
        return effects

    def _on_result(self, node_id, msg):
        if self._admit_result(node_id, msg):
            if self.registry.store_result(msg, self.clock()):
                self.results_total += 1
            else:
                self.duplicates += 1
        key = (node_id, msg["boot"])
        if key not in self._contiguous:
            # A controller that restarted resumes from what its registry already holds.
            self._contiguous[key] = self.registry.contiguous_results(node_id, msg["boot"])
        if msg["seq"] > self._contiguous[key]:
            self._ahead.setdefault(key, set()).add(msg["seq"])
        self._advance(key, self._contiguous[key])
        return []

    def _advance(self, key, watermark):
        """Raise (node, boot)'s acknowledgement watermark to `watermark`, then on past every
        result already stored just above it; an ack becomes due."""
        ahead = self._ahead.setdefault(key, set())
        contiguous = max(self._contiguous[key], watermark)
        while contiguous + 1 in ahead:
            contiguous += 1
            ahead.discard(contiguous)
        self._contiguous[key] = contiguous
        self._acks_due.add(key)

    def _skip_dropped(self, node_id, oldest):
        """Results before the node's oldest one on flash will never come (its outbox dropped
        them when full): stop waiting for them, so acknowledgements move on."""
        if not (isinstance(oldest, list) and len(oldest) == 2 and all(isinstance(v, int) for v in oldest)):
            return
        key = (node_id, oldest[0])
        if key in self._contiguous and self._contiguous[key] < oldest[1] - 1:
            self._advance(key, oldest[1] - 1)

    def _admit_result(self, node_id, msg):
        """Exactly once across moves (controller/fleet/ledger.py): a result is stored only when its
        node owns its input position and no other result for that position was stored."""
        pos = msg.get("in")
        if pos is None:
            return True
        lane = self.ledger.owner_lane(msg["wl"], node_id, pos)
        if lane is None and not self.ledger.tracks(msg["wl"]):
            return True  # a workload the ledger does not track (no placement made by this registry)
        if lane is None:
            self.out_of_range += 1
            return False
        if not self.ledger.accept(msg["wl"], lane, pos, node_id, msg["boot"], msg["seq"]):
            if self.ledger.accepted_by(msg["wl"], lane, pos) == node_id:
                # The same node again: a re-delivery (stored once by (node, boot, seq)) or a
                # rebooted node re-inferring from its cached assignment before the controller's
                # resume position reached it. Kept as that node's result; the stream still
                # counts the position once, from this one node.
                self.replays += 1
                return True
            self.duplicates += 1
            return False
        return True

    def _on_event(self, node_id, msg):
        self.registry.add_event(node_id, msg["level"], msg["kind"], msg["msg"], msg.get("data"), now=self.clock())
        if msg["kind"] == "degraded":
            # The node's supervisor gave up on a crash-looping child: a migration trigger.
            self.registry.set_node_state(node_id, "degraded")
        return []

    def _on_ota_state(self, node_id, msg):
        # Update progress is the deployer's business (controller/deploy/deployer.py); the registry
        # keeps the outcomes in the node's event log.
        if msg["state"] in ("rejected", "reverted", "abandoned", "confirmed", "rolledback"):
            level = "info" if msg["state"] in ("confirmed", "rolledback") else "warn"
            self.registry.add_event(node_id, level, "ota_" + msg["state"], "update %s %s%s" % (
                msg["id"], msg["state"], ": " + msg["err"] if msg.get("err") else ""), now=self.clock())
        return []

    def _on_reply(self, node_id, msg):
        self.registry.add_event(node_id, "info" if msg["ok"] else "warn", "reply",
                                "reply %s: %s" % (msg["id"], msg.get("data") if msg["ok"] else msg.get("error")),
                                now=self.clock())
        return []

    # -- periodic ---------------------------------------------------------------------------

    def tick(self, connected_since=None):
        """Time-driven work: silent nodes, acks, placement. Call about once a second.

        connected_since: when the controller's own broker link last came up. A node is silent
        only if it was silent while the controller could hear it; after the controller itself
        was cut off, every node gets a full timeout to show up again.
        """
        effects = []
        now = self.clock()
        self.connected_since = connected_since or 0
        for node in self.registry.nodes():
            heard = max(node["last_seen"], self.connected_since)
            if node["state"] == "offline":
                continue
            if node["id"] in self.detector.history:
                down = self.detector.is_down(node["id"], now, self.connected_since)
            else:
                down = now - heard > HEARTBEAT_TIMEOUT_S
            if down:
                self.registry.set_node_state(node["id"], "offline")
                self.registry.add_event(node["id"], "warn", "node_offline", "%s silent for %.1f s (phi %.1f)" % (
                    node["id"], now - heard, min(99.0, self.detector.phi(node["id"], now, self.connected_since))), now=now)
        effects.append(self.lease())
        effects.extend(self.flush_acks())
        effects.extend(self.run_commands())
        effects.extend(self.reconcile())
        effects.extend(self.migrate())
        self.registry.commit()
        return effects

    def lease(self):
        """The controller's lease (fencing, docs/placement.md): once per tick, not retained."""
        self.lease_seq += 1
        payload = protocol.encode("lease", {"v": protocol.VERSION, "ctrl": self.ctrl_id, "seq": self.lease_seq})
        return Publish(protocol.lease_topic(self.prefix), payload, *protocol.DELIVERY["lease"])

    def flush_acks(self):
        effects = []
        for node_id, boot in sorted(self._acks_due):
            seq = self._contiguous.get((node_id, boot), 0)
            if seq > 0:
                payload = protocol.encode("ack", {"v": protocol.VERSION, "boot": boot, "seq": seq})
                effects.append(Publish(protocol.node_topic(self.prefix, node_id, "ack"), payload, 1, False))
        self._acks_due.clear()
        return effects

    def _fleet_view(self, now):
        """Registry nodes with the state placement should see: offline, draining, or as reported."""
        nodes = self.registry.nodes()
        for node in nodes:
            if node["state"] == "online" and node["id"] in self.draining:
                node["state"] = "draining"
        return nodes

    def _round(self, nodes, workloads, placements, now):
        rnd = placement.Round(nodes, self.profiles, self.manifests, self.cfg, self.policy,
                              self.cooldown.blocked_targets(now))
        for wid, nid in placements:
            if wid in workloads and nid in rnd.by_id:
                rnd.take(workloads[wid], nid)
        return rnd

    def reconcile(self):
        """Re-plan placements; publish a new assignment to every node whose set changed.

        Nodes taking a workload over in a move count as the move's, not the planner's; moving
        running work is migrate()'s job."""
        nodes = self._fleet_view(self.clock())
        now = self.clock()
        workloads = {wl["id"]: wl for wl in self.registry.workloads()}
        before = set(self.registry.placements())
        incoming = {(m.workload, m.dst) for m in self.moves.values()}
        after, self.pending = placement.plan(list(workloads.values()), nodes, before - incoming, self.profiles,
                                             self.manifests, self.cfg, self.policy, self.cooldown.blocked_targets(now))
        after = set(after) | {(w, n) for w, n in incoming if w in workloads}
        if after == before:
            return []
        for wid, nid in sorted(before - after):
            self.registry.unplace(wid, nid)
            row = self.ledger.row(wid, nid)
            if row is not None and row[2] is None:
                self.ledger.close(wid, row[0], nid, self.ledger.next_pos(wid, row[0]))
            self.registry.add_event(nid, "info", "unplaced", "%s removed from %s" % (wid, nid), now=now)
        for wid, nid in sorted(after - before):
            lane = self.ledger.free_lane(wid, workloads[wid].get("replicas", 1))
            start = self.ledger.next_pos(wid, lane)
            self.ledger.open(wid, lane, nid, start)
            self.registry.place(wid, nid, now)
            self.registry.add_event(nid, "info", "placed", "%s placed on %s (lane %d from input %d): %s" % (
                wid, nid, lane, start, self._why_here(workloads[wid], nid, nodes)), now=now)
        changed = sorted({nid for _, nid in before ^ after})
        effects = [self._assignment(nid) for nid in changed if any(n["id"] == nid for n in nodes)]
        self.registry.commit()
        return effects

    def _why_here(self, workload, node_id, nodes):
        node = next((n for n in nodes if n["id"] == node_id), None)
        if node is None:
            return "-"
        tel = node.get("telemetry") or {}
        power = tel.get("power") or {}
        return "cpu %s, power %s" % ("-" if tel.get("cpu") is None else "%.0f%%" % tel["cpu"],
                                     power.get("src", "unknown") + ("" if power.get("pct") is None else " %.0f%%" % power["pct"]))

    # -- migration --------------------------------------------------------------------------

    def migrate(self):
        """One migration cycle: advance the moves in progress, then start the moves the
        triggers call for (controller/fleet/migration.py)."""
        now = self.clock()
        effects = []
        nodes = self._fleet_view(now)
        by_id = {n["id"]: n for n in nodes}
        for key, move in sorted(self.moves.items()):
            src_down = by_id.get(move.src, {}).get("state") == "offline"
            if move.step(now, self.cfg, src_down):
                effects.extend(self._move_changed(move, now))
        workloads = {wl["id"]: wl for wl in self.registry.workloads()}
        placements = self.registry.placements()
        incoming = {(m.workload, m.dst) for m in self.moves.values()}
        hosting = {n for w, n in placements if (w, n) not in incoming}
        triggered = {}
        for node in nodes:
            if node["id"] not in hosting:
                continue
            why = self.triggers.reason(node, now, down=node["state"] == "offline",
                                       draining=node["id"] in self.draining,
                                       profile=self.profiles.get(node["board"], {}))
            if why:
                triggered[node["id"]] = why
        if not triggered:
            self.stuck = {}
            return effects
        busy = {m.src for m in self.moves.values()} | {m.dst for m in self.moves.values()}
        rnd = self._round(nodes, workloads, placements, now)
        logical = [(w, n) for w, n in placements if (w, n) not in incoming]
        chosen, self.stuck = migration.plan_moves(triggered, logical, workloads, rnd, self.cooldown, busy, now)
        for wid, src, dst, reason in chosen:
            effects.extend(self.start_move(workloads[wid], src, dst, reason, alive=reason != "down"))
        return effects

    def start_move(self, workload, src, dst, reason, alive=True):
        now = self.clock()
        wid = workload["id"]
        lane = self.ledger.lane_of(wid, src)
        if lane is None:
            lane = self.ledger.free_lane(wid, workload.get("replicas", 1))
            self.ledger.open(wid, lane, src, self.ledger.next_pos(wid, lane))
        handover = migration.handover_position(self.ledger.next_pos(wid, lane), workload["rate"],
                                               self.cfg["handover_lead_s"], alive)
        self.ledger.close(wid, lane, src, handover)
        self.ledger.open(wid, lane, dst, handover)
        self.registry.place(wid, dst, now)
        move = migration.Move(wid, lane, src, dst, handover, reason, now, alive)
        self.moves[(wid, lane)] = move
        self.registry.add_event(src, "info", "move_started", "%s: %s -> %s from input %d (%s)" % (
            wid, src, dst, handover, reason), data=move.as_dict(), now=now)
        effects = [self._assignment(dst)]
        if not alive:
            # Nothing to hand over from a dead node: it loses the workload now (and is fenced
            # should it come back with results from past the hand-over point).
            self.registry.unplace(wid, src)
            self.cooldown.record(wid, src, now)
            effects.append(self._assignment(src))
        self.registry.commit()
        return effects

    def _observe_moves(self, node_id, wl_reports, now):
        effects = []
        mine = [(key, move) for key, move in sorted(self.moves.items()) if node_id in (move.src, move.dst)]
        if not mine:
            return effects
        reports = {r["id"]: r for r in wl_reports}
        nodes = {n["id"]: n for n in self.registry.nodes()}
        for key, move in mine:
            src_down = nodes.get(move.src, {}).get("state") == "offline"
            if move.observe(node_id, reports.get(move.workload), now, src_down):
                effects.extend(self._move_changed(move, now))
        return effects

    def _move_changed(self, move, now):
        wid = move.workload
        if move.state == "handing_over":
            # The new worker is running: the old one finishes the inputs before the hand-over point.
            self.registry.add_event(move.dst, "info", "move_ready", "%s running on %s; %s stops at input %d" % (
                wid, move.dst, move.src, move.handover), now=now)
            return [self._assignment(move.src)]
        del self.moves[(wid, move.lane)]
        if move.state == "done":
            self.moves_done += 1
            effects = []
            if (wid, move.src) in self.registry.placements():
                self.registry.unplace(wid, move.src)
                effects.append(self._assignment(move.src))
            if move.src_alive:
                self.cooldown.record(wid, move.src, now)
            self.registry.add_event(move.dst, "info", "moved", "%s moved %s -> %s at input %d in %.1f s (%s)" % (
                wid, move.src, move.dst, move.handover, now - move.started, move.reason),
                data=move.as_dict(), now=now)
            return effects
        # aborted: the new node never ran it; the old node's stream is open-ended again.
        self.registry.unplace(wid, move.dst)
        self.ledger.drop(wid, move.lane, move.dst, move.handover)
        row = self.ledger.row(wid, move.src)
        if row is not None:
            self.ledger.reopen(wid, move.lane, move.src, row[1])
        self.registry.add_event(move.dst, "warn", "move_aborted", "%s: %s did not run it within %.0f s; stays on %s" % (
            wid, move.dst, self.cfg["move_timeout_s"], move.src), data=move.as_dict(), now=now)
        return [self._assignment(move.dst), self._assignment(move.src)]

    # -- operator commands (controller/fleet/commands.py) -------------------------------------------

    def run_commands(self):
        effects = []
        for command_id, op, args in commands.pending(self.registry.db):
            try:
                answer, more = getattr(self, "_op_" + op)(**args)
                commands.finish(self.registry.db, command_id, True, answer)
                effects.extend(more)
            except EdgefleetError as e:
                commands.finish(self.registry.db, command_id, False, str(e))
            except (TypeError, KeyError, ValueError) as e:
                commands.finish(self.registry.db, command_id, False, "bad %s command: %s" % (op, e))
        return effects

    def _op_move(self, workload, node, source=None):
        now = self.clock()
        wl = next((w for w in self.registry.workloads() if w["id"] == workload), None)
        if wl is None:
            raise NotFound("no workload %r" % workload)
        nodes = {n["id"]: n for n in self._fleet_view(now)}
        if node not in nodes:
            raise NotFound("no node %r" % node)
        hosts = sorted(n for w, n in self.registry.placements() if w == workload)
        if node in hosts:
            raise PlacementError("%s already runs on %s" % (workload, node), workload, node)
        if any(m.workload == workload for m in self.moves.values()):
            raise PlacementError("%s is already moving" % workload, workload, node)
        src = source or (hosts[0] if hosts else None)
        if src is None or src not in hosts:
            raise PlacementError("%s does not run on %s" % (workload, src or "any node"), workload, node)
        target = nodes[node]
        if target["state"] == "offline":
            raise PlacementError("%s is offline" % node, workload, node)
        rnd = self._round(list(nodes.values()), {wl["id"]: wl}, self.registry.placements(), now)
        why = rnd.keeps(wl, target)
        if why:
            raise PlacementError("cannot move %s to %s: %s" % (workload, node, why), workload, node)
        alive = nodes[src]["state"] != "offline"
        effects = self.start_move(wl, src, node, "operator", alive=alive)
        return "moving %s from %s to %s" % (workload, src, node), effects

    def _op_drain(self, node):
        if self.registry.node(node) is None:
            raise NotFound("no node %r" % node)
        self.draining.add(node)
        count = sum(1 for _, n in self.registry.placements() if n == node)
        self.registry.add_event(node, "info", "drain", "operator drains %s (%d workloads to move)" % (node, count),
                                now=self.clock())
        return "draining %s: %d workloads to move, one per cycle" % (node, count), []

    def _op_undrain(self, node):
        if node not in self.draining:
            raise NotFound("%s is not draining" % node)
        self.draining.discard(node)
        self.registry.add_event(node, "info", "undrain", "operator ends the drain of %s" % node, now=self.clock())
        return "%s takes work again" % node, []

    def _op_apply(self, workloads):
        before = {w["id"] for w in self.registry.workloads()}
        self.declare(workloads)
        after = {w["id"] for w in workloads}
        self.registry.add_event("", "info", "apply", "fleet file applied: %d added, %d removed, %d kept" % (
            len(after - before), len(before - after), len(after & before)), now=self.clock())
        return "applied: %d workloads (%d added, %d removed)" % (len(after), len(after - before), len(before - after)), self.reconcile()

    def _assignment(self, node_id):
        workloads = {wl["id"]: wl for wl in self.registry.workloads()}
        handing_over = {m.workload: m.handover for m in self.moves.values()
                        if m.src == node_id and m.state == "handing_over"}
        specs = []
        for wid, nid in self.registry.placements():
            if nid == node_id and wid in workloads:
                wl = workloads[wid]
                source = dict(wl["input"])
                row = self.ledger.row(wid, node_id)
                if row is not None:
                    source["start"] = self._resume.get((node_id, wid), row[1])
                    if wid in handing_over:
                        source["until"] = handing_over[wid]
                specs.append({"id": wid, "model": wl["model"], "rate": wl["rate"], "input": source})
        # Epochs are wall-clock milliseconds so they keep increasing across controller restarts
        # and registry resets; a node ignores an assignment older than the one it runs.
        node = self.registry.node(node_id)
        epoch = max(int(self.clock() * 1000), (node["epoch"] if node else 0) + 1)
        self.registry.set_epoch(node_id, epoch)
        payload = protocol.encode("assign", {"v": protocol.VERSION, "epoch": epoch, "wl": specs})
        return Publish(protocol.node_topic(self.prefix, node_id, "assign"), payload, 1, True)

    # -- views ------------------------------------------------------------------------------

    def snapshot(self):
        """The fleet as plain data, for the CLI's views and the demo's summary."""
        counts = self.registry.result_counts()
        placements = self.registry.placements()
        nodes = []
        for node in self.registry.nodes():
            tel = node["telemetry"]
            nodes.append({
                "id": node["id"], "board": node["board"], "runtime": node["runtime"], "state": node["state"],
                "boot": node["boot"], "cpu": tel.get("cpu"), "mem_free": tel.get("mem_free"),
                "mem_total": tel.get("mem_total"), "power": tel.get("power"), "temp": tel.get("temp"),
                "workloads": [w for w, n in placements if n == node["id"]], "results": counts.get(node["id"], 0),
                "workload_states": {w["id"]: {"state": w["state"], "err": w["err"]} for w in tel.get("wl", [])},
                "last_seen": node["last_seen"], "draining": node["id"] in self.draining,
                "fenced": tel.get("fenced"),
            })
        stats = self.registry.result_stats()
        workloads = []
        for wl in self.registry.workloads():
            s = stats.get(wl["id"], {})
            workloads.append({
                "id": wl["id"], "model": wl["model"], "rate": wl["rate"], "replicas": wl["replicas"],
                "nodes": [n for w, n in placements if w == wl["id"]], "pending": self.pending.get(wl["id"]),
                "results": s.get("results", 0), "accuracy": s.get("accuracy"), "mean_us": s.get("mean_us"),
                "priority": wl.get("priority", 0), "stuck": self.stuck.get(wl["id"]),
            })
        return {"nodes": nodes, "workloads": workloads, "results_received": sum(counts.values()),
                "moves": [m.as_dict() for _, m in sorted(self.moves.items())],
                "dropped": {"out_of_range": self.out_of_range, "duplicates": self.duplicates},
                "replays": self.replays}
