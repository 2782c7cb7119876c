"""Operator commands taken from the registry's queue (controller/fleet/commands.py): move,
drain, undrain, apply. Each answers a line for the CLI and may cause Publish effects."""
from ..errors import EdgefleetError, NotFound, PlacementError


class OperatorCommands:
    def __init__(self, fleet):
        # The controller: apply declares workloads and every command writes the audit log.
        self.fleet = fleet
        self.state = fleet.state
        self.reconciler = fleet.reconciler
        self.clock = fleet.clock

    def run(self):
        effects = []
        for command_id, op, args in self.state.store.pending_commands():
            try:
                answer, more = getattr(self, "_op_" + op)(**args)
                self.state.store.finish_command(command_id, True, answer)
                effects.extend(more)
            except EdgefleetError as e:
                self.state.store.finish_command(command_id, False, str(e))
            except (TypeError, KeyError, ValueError) as e:
                self.state.store.finish_command(command_id, False, "bad %s command: %s" % (op, e))
        return effects

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
        rnd = self.reconciler._round(list(nodes.values()), {wl["id"]: wl}, self.state.placements(), now)
        why = rnd.keeps(wl, target)
        if why:
            raise PlacementError("cannot move %s to %s: %s" % (workload, node, why), workload, node)
        alive = nodes[src]["state"] != "offline"
        effects = self.reconciler.start_move(wl, src, node, "operator", alive=alive)
        return "moving %s from %s to %s" % (workload, src, node), effects

    def _op_drain(self, node):
        if self.state.node(node) is None:
            raise NotFound("no node %r" % node)
        self.reconciler.set_draining(node, True)
        count = sum(1 for _, n in self.state.placements() if n == node)
        self.state.add_event(node, "info", "drain", "operator drains %s (%d workloads to move)" % (node, count),
                             now=self.clock())
        return "draining %s: %d workloads to move, one per cycle" % (node, count), []

    def _op_undrain(self, node):
        if node not in self.reconciler.draining:
            raise NotFound("%s is not draining" % node)
        self.reconciler.set_draining(node, False)
        self.state.add_event(node, "info", "undrain", "operator ends the drain of %s" % node, now=self.clock())
        return "%s takes work again" % node, []

    def _op_apply(self, workloads):
        before = {w["id"] for w in self.state.workloads()}
        self.fleet.declare(workloads)
        after = {w["id"] for w in workloads}
        self.state.add_event("", "info", "apply", "fleet file applied: %d added, %d removed, %d kept" % (
            len(after - before), len(before - after), len(after & before)), now=self.clock())
        return "applied: %d workloads (%d added, %d removed)" % (len(after), len(after - before), len(before - after)), self.reconciler.reconcile()
