"""Placement and migration, the fleet's reconciler: what should run where, and moving running
work there (docs/placement.md).

reconcile() re-plans placements from the in-memory fleet state (controller/fleet/placement.py);
migrate() advances moves in progress and starts the moves the triggers call for
(controller/fleet/migration.py); assignment() is the message that tells a node what it runs,
with the stream positions the ledger gives it. All return Publish effects; none does I/O.
"""
from edgefleet.firmware import protocol

from . import migration, placement
from .effects import Publish


class Reconciler:
    def __init__(self, state, ledger, clock, prefix, profiles, manifests, cfg, policy):
        self.state = state
        self.ledger = ledger
        self.clock = clock
        self.prefix = prefix
        self.profiles = profiles
        self.manifests = manifests
        self.cfg = cfg
        self.policy = policy
        self.triggers = migration.TriggerWatch(cfg)
        self.cooldown = migration.Cooldown(cfg)
        self.stuck = {}      # workload -> why a triggered move found no node
        self.pending = {}    # workload -> why a replica could not be placed
        self.moves_done = 0
        # Kept in the registry too, so that a restarted controller carries on where this one was:
        store = state.store
        self.moves = {(m["workload"], m["lane"]): migration.Move.from_state(m) for m in store.moves()}
        self.draining = store.draining()
        self.resume = store.resume_positions()  # (node, workload) -> position a rebooted node resumes from

    def forget_workload(self, workload_id):
        for move in [m for m in self.moves.values() if m.workload == workload_id]:
            self._end_move(move)
        for node_id, wid in [k for k in self.resume if k[1] == workload_id]:
            self._set_resume(node_id, wid, None)

    def note_reboot(self, node_id):
        """A rebooted node's workers start over: they resume at the first input not yet
        accepted instead of replaying their stream from its start."""
        for wid, nid in self.state.placements():
            row = self.ledger.row(wid, node_id) if nid == node_id else None
            if row is not None and row[2] is None:
                self._set_resume(node_id, wid, max(row[1], self.ledger.next_pos(wid, row[0])))

    def _set_resume(self, node_id, workload_id, pos):
        if pos is None:
            self.resume.pop((node_id, workload_id), None)
        else:
            self.resume[(node_id, workload_id)] = pos
        self.state.store.set_resume(node_id, workload_id, pos)

    def _unplace(self, workload_id, node_id):
        self.state.unplace(workload_id, node_id)
        if (node_id, workload_id) in self.resume:
            self._set_resume(node_id, workload_id, None)

    def _save_move(self, move):
        self.moves[(move.workload, move.lane)] = move
        self.state.store.put_move(move.state_dict())

    def _end_move(self, move):
        del self.moves[(move.workload, move.lane)]
        self.state.store.remove_move(move.workload, move.lane)

    def set_draining(self, node_id, draining):
        if draining:
            self.draining.add(node_id)
        else:
            self.draining.discard(node_id)
        self.state.store.set_draining(node_id, draining)

    def _fleet_view(self, now):
        """Registry nodes with the state placement should see: offline, draining, or as reported."""
        nodes = self.state.nodes()
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

        A move's source and target are the move's until it ends, not the planner's; moving
        running work is migrate()'s job."""
        nodes = self._fleet_view(self.clock())
        now = self.clock()
        workloads = {wl["id"]: wl for wl in self.state.workloads()}
        before = set(self.state.placements())
        moves = [(m.workload, m.src, m.dst) for m in self.moves.values()]
        after, self.pending = placement.plan(list(workloads.values()), nodes, before, self.profiles, self.manifests,
                                             self.cfg, self.policy, self.cooldown.blocked_targets(now), moves)
        after = set(after)
        if after == before:
            return []
        for wid, nid in sorted(before - after):
            self._unplace(wid, nid)
            row = self.ledger.row(wid, nid)
            if row is not None and row[2] is None:
                self.ledger.close(wid, row[0], nid, self.ledger.next_pos(wid, row[0]))
            self.state.add_event(nid, "info", "unplaced", "%s removed from %s" % (wid, nid), now=now)
        taken = {}   # workload -> its lanes owned open-ended, read once per round
        for wid, nid in sorted(after - before):
            if wid not in taken:
                taken[wid] = {lane for _, lane, _, _ in self.ledger.open_rows(wid)}
            lane = self.ledger.free_lane(wid, workloads[wid].get("replicas", 1), taken[wid])
            taken[wid].add(lane)
            start = self.ledger.next_pos(wid, lane)
            self.ledger.open(wid, lane, nid, start)
            self.state.place(wid, nid, now)
            self.state.add_event(nid, "info", "placed", "%s placed on %s (lane %d from input %d): %s" % (
                wid, nid, lane, start, self._why_here(workloads[wid], nid, nodes)), now=now)
        changed = sorted({nid for _, nid in before ^ after})
        present = {n["id"] for n in nodes}
        effects = [self.assignment(nid) for nid in changed if nid in present]
        self.state.commit()
        return effects

    def _why_here(self, workload, node_id, nodes):
        node = next((n for n in nodes if n["id"] == node_id), None)
        if node is None:
            return "-"
        tel = node.get("telemetry") or {}
        power = tel.get("power") or {}
        return "cpu %s, power %s" % ("-" if tel.get("cpu") is None else "%.0f%%" % tel["cpu"],
                                     power.get("src", "unknown") + ("" if power.get("pct") is None else " %.0f%%" % power["pct"]))

    def migrate(self):
        """One migration cycle: advance the moves in progress, then start the moves the
        triggers call for (controller/fleet/migration.py)."""
        now = self.clock()
        effects = []
        nodes = self._fleet_view(now)
        by_id = {n["id"]: n for n in nodes}
        for key, move in sorted(self.moves.items()):
            src_down = by_id.get(move.src, {}).get("state") == "offline"
            if move.state == "starting" and by_id.get(move.dst, {}).get("state") == "offline":
                # The target died before it ran the workload: give the move up now so that this
                # cycle plans the workload again, instead of waiting out the move's timeout.
                move.abort(now, "%s went offline" % move.dst)
                effects.extend(self._move_changed(move, now))
            elif move.step(now, self.cfg, src_down):
                effects.extend(self._move_changed(move, now))
        workloads = {wl["id"]: wl for wl in self.state.workloads()}
        placements = self.state.placements()
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
        chosen, self.stuck = migration.plan_moves(triggered, logical, workloads, rnd, self.cooldown, busy, now,
                                                  incoming=incoming)
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
                                               self.cfg["handover_lead_s"], alive, self._seen(wid, src))
        self.ledger.close(wid, lane, src, handover)
        self.ledger.open(wid, lane, dst, handover)
        self.state.place(wid, dst, now)
        move = migration.Move(wid, lane, src, dst, handover, reason, now, alive)
        self._save_move(move)
        self.state.add_event(src, "info", "move_started", "%s: %s -> %s from input %d (%s)" % (
            wid, src, dst, handover, reason), data=move.as_dict(), now=now)
        effects = [self.assignment(dst)]
        if not alive:
            # Nothing to hand over from a dead node: it loses the workload now (and is fenced
            # should it come back with results from past the hand-over point).
            self._unplace(wid, src)
            self.cooldown.record(wid, src, now)
            effects.append(self.assignment(src))
        self.state.commit()
        return effects

    def _seen(self, workload_id, node_id):
        """The highest input sequence number `node_id` reported receiving for a workload fed
        over MQTT (heartbeat wl `seen`, firmware/source_topic.py), or None."""
        node = self.state.node(node_id)
        for report in ((node or {}).get("telemetry") or {}).get("wl") or ():
            if report.get("id") == workload_id and isinstance(report.get("seen"), int):
                return report["seen"]
        return None

    def observe_moves(self, node_id, wl_reports, now):
        effects = []
        mine = [(key, move) for key, move in sorted(self.moves.items()) if node_id in (move.src, move.dst)]
        if not mine:
            return effects
        reports = {r["id"]: r for r in wl_reports}
        nodes = {n["id"]: n for n in self.state.nodes()}
        for key, move in mine:
            src_down = nodes.get(move.src, {}).get("state") == "offline"
            if move.observe(node_id, reports.get(move.workload), now, src_down):
                effects.extend(self._move_changed(move, now))
        return effects

    def _move_changed(self, move, now):
        wid = move.workload
        if move.state == "handing_over":
            # The new worker is running: the old one finishes the inputs before the hand-over point.
            self.state.add_event(move.dst, "info", "move_ready", "%s running on %s; %s stops at input %d" % (
                wid, move.dst, move.src, move.handover), now=now)
            self._save_move(move)
            return [self.assignment(move.src)]
        self._end_move(move)
        if move.state == "done":
            self.moves_done += 1
            effects = []
            if self.state.placed(wid, move.src):
                self._unplace(wid, move.src)
                effects.append(self.assignment(move.src))
            if move.src_alive:
                self.cooldown.record(wid, move.src, now)
            self.state.add_event(move.dst, "info", "moved", "%s moved %s -> %s at input %d in %.1f s (%s)" % (
                wid, move.src, move.dst, move.handover, now - move.started, move.reason),
                data=move.as_dict(), now=now)
            return effects
        # aborted: the new node never ran it; the old node's stream is open-ended again.
        self._unplace(wid, move.dst)
        self.ledger.drop(wid, move.lane, move.dst, move.handover)
        row = self.ledger.row(wid, move.src)
        if row is not None and move.src_alive:
            self.ledger.reopen(wid, move.lane, move.src, row[1])
        # A dead source lost the workload when the move started: the lane stays free for the
        # next placement cycle, which finds the workload a node again.
        why = move.abort_reason or "did not run it within %.0f s" % self.cfg["move_timeout_s"]
        if move.abort_reason:
            # The source is no worse for the failed move: let the workload go back to it.
            self.cooldown.forget(wid, move.src)
        self.state.add_event(move.dst, "warn", "move_aborted", "%s: %s %s; stays on %s" % (
            wid, move.dst, why, move.src), data=move.as_dict(), now=now)
        return [self.assignment(move.dst), self.assignment(move.src)]

    def assignment(self, node_id):
        workloads = {wl["id"]: wl for wl in self.state.workloads()}
        handing_over = {m.workload: m.handover for m in self.moves.values()
                        if m.src == node_id and m.state == "handing_over"}
        specs = []
        for wid in self.state.placed_on(node_id):
            if wid in workloads:
                wl = workloads[wid]
                source = dict(wl["input"])
                row = self.ledger.row(wid, node_id)
                if row is not None:
                    source["start"] = self.resume.get((node_id, wid), row[1])
                    if wid in handing_over:
                        source["until"] = handing_over[wid]
                spec = {"id": wid, "model": wl["model"], "rate": wl["rate"], "input": source}
                if wl.get("output"):
                    spec["output"] = wl["output"]
                specs.append(spec)
        # Epochs are wall-clock milliseconds so they keep increasing across controller restarts
        # and registry resets; a node ignores an assignment older than the one it runs.
        node = self.state.node(node_id)
        epoch = max(int(self.clock() * 1000), (node["epoch"] if node else 0) + 1)
        self.state.set_epoch(node_id, epoch)
        payload = protocol.encode("assign", {"v": protocol.VERSION, "epoch": epoch, "wl": specs})
        return Publish(protocol.node_topic(self.prefix, node_id, "assign"), payload, 1, True)
