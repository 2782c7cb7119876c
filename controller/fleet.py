"""The fleet controller's logic: messages in, registry updates and messages out.

`FleetController.handle()` and `tick()` do no network I/O; they return the messages to
publish as `Publish` tuples, and the service (controller/service.py) sends them. That keeps the
protocol logic testable without a broker and the broker code free of decisions.
"""
import logging
import time
from collections import namedtuple

from edgefleet.boards import catalog
from edgefleet.firmware import protocol
from edgefleet.firmware.errors import ProtocolError

from . import placement

log = logging.getLogger(__name__)

Publish = namedtuple("Publish", "topic payload qos retain")

# A node silent for this long is offline even if its Last Will never arrived (e.g. a broker
# restart lost the will); the Last Will normally reports a dead node well before.
HEARTBEAT_TIMEOUT_S = 10.0
# A node that went offline keeps its workloads this long before they are placed elsewhere:
# nodes infer on without a link, and a broker restart makes every node "offline" at once.
OFFLINE_GRACE_S = 30.0


class FleetController:
    def __init__(self, registry, prefix=protocol.DEFAULT_PREFIX, manifests=None, ctrl_id="ctrl",
                 clock=time.time):
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

    # -- declared state ---------------------------------------------------------------------

    def declare(self, workloads):
        """Make the registry's workloads exactly these (a list of workload dicts)."""
        wanted = {wl["id"] for wl in workloads}
        for wl in self.registry.workloads():
            if wl["id"] not in wanted:
                self.registry.remove_workload(wl["id"])
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
            if kind in ("assign", "ack", "cmd", "ctrl_status", "ota"):
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
        self.registry.record_heartbeat(node_id, telemetry, now)
        self._skip_dropped(node_id, (msg.get("outbox") or {}).get("oldest"))
        if node["state"] == "offline":
            self.registry.set_node_state(node_id, "online", now)
            self.registry.add_event(node_id, "info", "node_online", "%s heartbeats again" % node_id, now=now)
            return self.reconcile()
        return []

    def _on_result(self, node_id, msg):
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

    def _on_event(self, node_id, msg):
        self.registry.add_event(node_id, msg["level"], msg["kind"], msg["msg"], msg.get("data"), now=self.clock())
        return []

    def _on_ota_state(self, node_id, msg):
        # Update progress is the deployer's business (controller/deployer.py); the registry
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
            if node["state"] != "offline" and now - heard > HEARTBEAT_TIMEOUT_S:
                self.registry.set_node_state(node["id"], "offline")
                self.registry.add_event(node["id"], "warn", "node_offline",
                                        "%s silent for %.0f s" % (node["id"], now - heard), now=now)
        effects.extend(self.flush_acks())
        effects.extend(self.reconcile())
        self.registry.commit()
        return effects

    def flush_acks(self):
        effects = []
        for node_id, boot in sorted(self._acks_due):
            seq = self._contiguous.get((node_id, boot), 0)
            if seq > 0:
                payload = protocol.encode("ack", {"v": protocol.VERSION, "boot": boot, "seq": seq})
                effects.append(Publish(protocol.node_topic(self.prefix, node_id, "ack"), payload, 1, False))
        self._acks_due.clear()
        return effects

    def reconcile(self):
        """Re-plan placements; publish a new assignment to every node whose set changed."""
        nodes = self.registry.nodes()
        now = self.clock()
        for node in nodes:
            if node["state"] == "offline" and now - max(node["last_seen"], self.connected_since) < OFFLINE_GRACE_S:
                node["state"] = "online"  # for placement only: it may well still be serving
        before = set(self.registry.placements())
        after, self.pending = placement.plan(self.registry.workloads(), nodes, before, self.profiles, self.manifests)
        after = set(after)
        if after == before:
            return []
        for wid, nid in sorted(before - after):
            self.registry.unplace(wid, nid)
            self.registry.add_event(nid, "info", "unplaced", "%s removed from %s" % (wid, nid), now=now)
        for wid, nid in sorted(after - before):
            self.registry.place(wid, nid, now)
            self.registry.add_event(nid, "info", "placed", "%s placed on %s" % (wid, nid), now=now)
        changed = sorted({nid for _, nid in before ^ after})
        effects = [self._assignment(nid) for nid in changed if any(n["id"] == nid for n in nodes)]
        self.registry.commit()
        return effects

    def _assignment(self, node_id):
        workloads = {wl["id"]: wl for wl in self.registry.workloads()}
        specs = []
        for wid, nid in self.registry.placements():
            if nid == node_id and wid in workloads:
                wl = workloads[wid]
                specs.append({"id": wid, "model": wl["model"], "rate": wl["rate"], "input": wl["input"]})
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
                "last_seen": node["last_seen"],
            })
        stats = self.registry.result_stats()
        workloads = []
        for wl in self.registry.workloads():
            s = stats.get(wl["id"], {})
            workloads.append({
                "id": wl["id"], "model": wl["model"], "rate": wl["rate"], "replicas": wl["replicas"],
                "nodes": [n for w, n in placements if w == wl["id"]], "pending": self.pending.get(wl["id"]),
                "results": s.get("results", 0), "accuracy": s.get("accuracy"), "mean_us": s.get("mean_us"),
            })
        return {"nodes": nodes, "workloads": workloads, "results_received": sum(counts.values())}
