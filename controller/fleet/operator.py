"""Operator requests to the running controller (`op_req`, docs/protocol.md "Operator requests"):
the CLI asks over the broker, the controller's own thread answers here, from the state it owns.

Read requests (status, events, logs, export, plan) answer from memory and the registry; acting
ones (apply, move, drain, undrain) change the fleet and write the audit log. Every answer is
JSON data, sent back as `op_reply` parts (reply_effects) on the asker's reply topic.
"""
import inspect
import json

from edgefleet.boards import catalog
from edgefleet.firmware import protocol

from .. import opwire
from ..errors import ConfigError, EdgefleetError, NotFound, PlacementError
from . import fleetfile, placement
from .effects import Publish

# What `edgefleet logs` shows of a node unless --all: its boots (with why it reset), its
# children's crashes and hangs, and its supervisor's escalations.
SUPERVISION_KINDS = ("boot", "crash", "hang", "degraded", "safe_mode", "workload_failed",
                     "node_degraded", "node_safe", "node_offline", "node_online", "registered")
MAX_EVENTS = 1000
# Characters of the answer's JSON text per op_reply: JSON-escaping a piece of JSON at most
# doubles it (every '"' and '\\' gains a backslash), which keeps a part under the 16 KB limit.
PART_CHARS = 6000
# At most this many parts (about 3 MB of answer, a status of several thousand nodes): a bound on
# what one request makes the controller send, and under mosquitto's default queue of 1000
# messages per client, so no part of an answer is dropped on its way to a slow asker.
MAX_PARTS = 512


def plan_preview(store, workloads, manifests):
    """What applying `workloads` changes: declared workloads and placements, as plain data."""
    current = {w["id"]: w for w in store.workloads()}
    wanted = {w["id"]: w for w in workloads}
    placements = store.placements()
    profiles = {p["name"]: p for p in catalog.all_profiles()}
    after, pending = placement.plan(workloads, store.nodes(), placements, profiles, manifests)
    before = set(placements)
    return {
        "add": sorted(set(wanted) - set(current)),
        "change": sorted(w for w in set(wanted) & set(current) if _declared(wanted[w]) != _declared(current[w])),
        "remove": sorted(set(current) - set(wanted)),
        "place": sorted(set(after) - before),
        "unplace": sorted(before - set(after)),
        "pending": pending,
    }


def _declared(wl):
    keys = ("model", "rate", "replicas", "input", "constraints", "resources", "priority")
    return {k: wl.get(k) for k in keys if wl.get(k) not in (None, {}, 0)}


def events_answer(store, node=None, limit=50, supervision_only=False):
    """The audit log's last `limit` events (of one node), as `events` and `logs` show them."""
    if node is not None and not protocol.valid_node_id(node):
        raise ConfigError("bad node id %r" % (node,))
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_EVENTS:
        raise ConfigError("limit must be an integer from 1 to %d" % MAX_EVENTS)
    return {"events": store.events(node, limit, SUPERVISION_KINDS if supervision_only else None)}


def reply_effects(prefix, request_id, answer=None, error=None):
    """The op_reply messages that carry `answer` (JSON data) or `error` back to the asker."""
    topic = opwire.reply_topic(prefix, request_id)
    qos, retain = protocol.delivery("op_reply")
    if error is None:
        text = json.dumps(answer)
        pieces = [text[i:i + PART_CHARS] for i in range(0, len(text), PART_CHARS)] or [""]
        if len(pieces) > MAX_PARTS:
            error = "the answer is %d bytes, over the %d the controller sends for one request" % (
                len(text), PART_CHARS * MAX_PARTS)
    if error is not None:
        msg = {"v": protocol.VERSION, "id": request_id, "ok": False, "part": 0, "parts": 1, "error": error[:2000]}
        return [Publish(topic, protocol.encode("op_reply", msg), qos, retain)]
    return [Publish(topic, protocol.encode("op_reply", {"v": protocol.VERSION, "id": request_id, "ok": True,
                                                         "part": i, "parts": len(pieces), "data": piece}), qos, retain)
            for i, piece in enumerate(pieces)]


class OperatorRequests:
    def __init__(self, fleet):
        # The controller: apply declares workloads and every acting request writes the audit log.
        self.fleet = fleet
        self.state = fleet.state
        self.reconciler = fleet.reconciler
        self.clock = fleet.clock

    def answer(self, op, args):
        """(answer data, Publish effects) for one request; EdgefleetError when it cannot be done."""
        handler = getattr(self, "_op_" + op)
        params = inspect.signature(handler).parameters
        unknown = sorted(set(args) - set(params))
        if unknown:
            raise ConfigError("%s takes %s, not %s" % (op, ", ".join(params) or "no arguments", ", ".join(unknown)))
        missing = [name for name, p in params.items() if p.default is p.empty and name not in args]
        if missing:
            raise ConfigError("%s needs %s" % (op, ", ".join(missing)))
        return handler(**args)

    # -- reads --------------------------------------------------------------------------------

    def _op_status(self):
        return self.fleet.snapshot(), []

    def _op_events(self, node=None, limit=50):
        return events_answer(self.state.store, node, limit), []

    def _op_logs(self, node, limit=100, all=False):
        if self.state.node(node) is None:
            raise NotFound("no node %r in the fleet" % (node,))
        return events_answer(self.state.store, node, limit, supervision_only=not all), []

    def _op_export(self):
        return {"text": fleetfile.dump(self.state.workloads())}, []

    def _workloads(self, workloads):
        """A request's workloads, held to what a fleet file may declare."""
        if not isinstance(workloads, list):
            raise ConfigError("workloads must be a list")
        parsed = [fleetfile.parse_workload(raw, "workload[%d]" % i, self.fleet.manifests)
                  for i, raw in enumerate(workloads)]
        ids = [w["id"] for w in parsed]
        if len(set(ids)) != len(ids):
            raise ConfigError("workload ids repeated")
        return parsed

    def _op_plan(self, workloads):
        return {"plan": plan_preview(self.state.store, self._workloads(workloads), self.fleet.manifests)}, []

    # -- acting -------------------------------------------------------------------------------

    def _op_move(self, workload, node, source=None):
        now = self.clock()
        wl = next((w for w in self.state.workloads() if w["id"] == workload), None)
        if wl is None:
            raise NotFound("no workload %r" % workload)
        nodes = {n["id"]: n for n in self.reconciler._fleet_view(now)}
        if node not in nodes:
            raise NotFound("no node %r" % node)
        hosts = sorted(n for w, n in self.state.placements() if w == workload)
        if node in hosts:
            raise PlacementError("%s already runs on %s" % (workload, node), workload, node)
        if any(m.workload == workload for m in self.reconciler.moves.values()):
            raise PlacementError("%s is already moving" % workload, workload, node)
        src = source or (hosts[0] if hosts else None)
        if src is None or src not in hosts:
            raise PlacementError("%s does not run on %s" % (workload, src or "any node"), workload, node)
        target = nodes[node]
        if target["state"] == "offline":
            raise PlacementError("%s is offline" % node, workload, node)
        # Room beside every workload the target holds, one that is moving off it included: that
        # one runs there until its hand-over point (make-before-break).
        workloads = {w["id"]: w for w in self.state.workloads()}
        rnd = self.reconciler._round(list(nodes.values()), workloads, self.state.placements(), now)
        why = rnd.keeps(wl, target)
        if why:
            raise PlacementError("cannot move %s to %s: %s" % (workload, node, why), workload, node)
        alive = nodes[src]["state"] != "offline"
        effects = self.reconciler.start_move(wl, src, node, "operator", alive=alive)
        return {"message": "moving %s from %s to %s" % (workload, src, node)}, effects

    def _op_drain(self, node):
        if self.state.node(node) is None:
            raise NotFound("no node %r" % node)
        self.reconciler.set_draining(node, True)
        count = sum(1 for _, n in self.state.placements() if n == node)
        self.state.add_event(node, "info", "drain", "operator drains %s (%s to move)" % (node, _workloads(count)),
                             now=self.clock())
        return {"message": "draining %s: %s to move, one per cycle" % (node, _workloads(count))}, []

    def _op_undrain(self, node):
        if node not in self.reconciler.draining:
            raise NotFound("%s is not draining" % node)
        self.reconciler.set_draining(node, False)
        self.state.add_event(node, "info", "undrain", "operator ends the drain of %s" % node, now=self.clock())
        return {"message": "%s takes work again" % node}, []

    def _op_apply(self, workloads):
        workloads = self._workloads(workloads)
        before = {w["id"] for w in self.state.workloads()}
        self.fleet.declare(workloads)
        after = {w["id"] for w in workloads}
        self.state.add_event("", "info", "apply", "fleet file applied: %d added, %d removed, %d kept" % (
            len(after - before), len(before - after), len(after & before)), now=self.clock())
        message = "applied: %d workloads (%d added, %d removed)" % (len(after), len(after - before), len(before - after))
        return {"message": message}, self.reconciler.reconcile()


def refusal(op, error):
    """The error text for a request that failed: the controller's own words for its errors."""
    if isinstance(error, EdgefleetError):
        return str(error)
    return "bad %s request: %s" % (op, error)


def _workloads(count):
    return "1 workload" if count == 1 else "%d workloads" % count
