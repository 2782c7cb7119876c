"""Live migration, as pure logic: triggers, anti-flap and the make-before-break move.

Triggers (why work leaves a node), in the order they are reported:
  down        the failure detector declared the node dead (Last Will or phi over its threshold)
  drain       the operator drains the node (`edgefleet drain NODE`)
  degraded    the node's supervisor gave up on a crash-looping child (status `degraded`)
  thermal     the node reports throttling, or a temperature at the limit
  battery     on battery under the low watermark (default 20%), or with too little budget
  cpu         CPU above the high watermark (default 85%) for a sustained period (default 30 s)
The operator's `edgefleet move WORKLOAD NODE` is a move of its own, with reason "operator".

Anti-flap:
  hysteresis  work is placed only on nodes under `place_below` (60%) CPU, far from the 85% trigger
  cooldown    a workload does not return to a node it left within `cooldown_s` (300 s), and a
              workload moves at most once per `cooldown_s` for a live trigger
  one per cycle  each node is the source of at most one move and the target of at most one move
              per controller cycle; a dead node is exempt as a source (it cannot flap, and its
              work must run elsewhere at once)
A dead node and an operator's drain override the cooldown: that work has to leave.

A move is make-before-break where the old node is alive (docs/placement.md):
  starting      the new node is assigned the workload from hand-over position H; the old node
                keeps running, its results from H on are no longer accepted
  handing_over  the new node's heartbeat reports the workload running with results: the old
                node is told to stop at H (input.until) and finishes the inputs before H
  done          the old node reports the workload done at H (or is down, or the hand-over timed
                out): it is unassigned
  aborted       the new node did not report running in time: it is unassigned and the old node's
                stream is open-ended again
"""
import math

DEFAULTS = {
    "cpu_high": 85.0, "cpu_high_for_s": 30.0, "battery_low": 20.0, "min_budget_h": 1.0,
    "place_below": 60.0, "cooldown_s": 300.0, "temp_limit": 80.0,
    # The hand-over point lies this many seconds of input ahead of the old node's newest result,
    # so the new worker is running before the old one gets there.
    "handover_lead_s": 3.0,
    "move_timeout_s": 30.0,
}


def settings(**overrides):
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError("unknown migration settings: %s" % ", ".join(sorted(unknown)))
    out = dict(DEFAULTS)
    out.update(overrides)
    return out


class TriggerWatch:
    """Per node: since when its CPU has been above the high watermark."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.cpu_high_since = {}

    def observe(self, node_id, cpu, now):
        if cpu is not None and cpu > self.cfg["cpu_high"]:
            self.cpu_high_since.setdefault(node_id, now)
        else:
            self.cpu_high_since.pop(node_id, None)

    def reason(self, node, now, down=False, draining=False, profile=None):
        """Why work should leave this node now, or None."""
        from .placement import battery_hours
        if down:
            return "down"
        if draining:
            return "drain"
        if node.get("state") == "degraded":
            return "degraded"
        if node.get("state") == "safe":
            # A node in safe mode runs only its link and deploy path: its work is not served.
            return "safe mode"
        tel = node.get("telemetry") or {}
        power = tel.get("power") or {}
        temp = tel.get("temp")
        if power.get("throttled"):
            return "thermal: throttled"
        if temp is not None and temp >= self.cfg["temp_limit"]:
            return "thermal: %.0f C" % temp
        if power.get("src") in ("battery", "solar") and power.get("pct") is not None:
            if power["pct"] < self.cfg["battery_low"]:
                return "battery: %.0f%% < %.0f%%" % (power["pct"], self.cfg["battery_low"])
            hours = battery_hours(power, profile or {})
            if hours is not None and hours < self.cfg["min_budget_h"]:
                return "battery: %.1f h of budget < %.1f h" % (hours, self.cfg["min_budget_h"])
        since = self.cpu_high_since.get(node["id"])
        if since is not None and now - since >= self.cfg["cpu_high_for_s"]:
            return "cpu: %.0f%% > %.0f%% for %.0f s" % (tel.get("cpu") or 0, self.cfg["cpu_high"], now - since)
        return None


class Cooldown:
    """When each workload last moved, and off which node."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.left = {}       # (workload, node) -> when the workload left the node
        self.last_move = {}  # workload -> when it last moved

    def record(self, workload, src, now):
        self.left[(workload, src)] = now
        self.last_move[workload] = now

    def forget(self, workload, src):
        """Undo record(): the move off `src` did not happen after all."""
        self.left.pop((workload, src), None)
        self.last_move.pop(workload, None)

    def blocked_targets(self, now):
        """{(workload, node): why} for nodes a workload may not go back to yet."""
        out = {}
        for (wid, nid), at in self.left.items():
            if now - at < self.cfg["cooldown_s"]:
                out[(wid, nid)] = "%.0f s ago (cooldown %.0f s)" % (now - at, self.cfg["cooldown_s"])
        return out

    def may_move(self, workload, now):
        at = self.last_move.get(workload)
        return at is None or now - at >= self.cfg["cooldown_s"]


def handover_position(next_pos, rate, lead_s, src_alive, seen=None):
    """The first stream position the new node owns. A dead old node hands over at once, from
    the first position not yet accepted; a live one runs on for lead_s seconds of input.

    seen: for a stream published to a topic (input kind "topic"), the highest input sequence
    number the old node reported receiving. Its inputs come at the publisher's pace, whatever
    the old node has served, and the new node receives only what is published after it
    subscribed: so the hand-over point lies lead_s seconds of input (`rate`, the publisher's
    expected rate) past the newest input known to be published, which gives the new node that
    long to start and subscribe (make-before-break)."""
    if not src_alive:
        return next_pos
    if seen is not None:
        next_pos = max(next_pos, seen + 1)
    return next_pos + max(1, int(math.ceil(rate * lead_s)))


class Move:
    def __init__(self, workload, lane, src, dst, handover, reason, now, src_alive):
        self.workload, self.lane, self.src, self.dst = workload, lane, src, dst
        self.handover = handover
        self.reason = reason
        self.started = now
        self.src_alive = src_alive
        self.state = "starting"
        self.changed_at = now
        self.abort_reason = None

    def as_dict(self):
        return {"workload": self.workload, "lane": self.lane, "from": self.src, "to": self.dst,
                "handover": self.handover, "reason": self.reason, "state": self.state}

    def state_dict(self):
        """Everything a restarted controller needs to carry the move on."""
        out = self.as_dict()
        out.update(started=self.started, changed_at=self.changed_at, src_alive=self.src_alive)
        return out

    @classmethod
    def from_state(cls, d):
        move = cls(d["workload"], d["lane"], d["from"], d["to"], d["handover"], d["reason"], d["started"], d["src_alive"])
        move.state, move.changed_at = d["state"], d["changed_at"]
        return move

    def abort(self, now, reason):
        """Give the move up before its timeout (its target died)."""
        self.abort_reason = reason
        self._to("aborted", now)

    def _to(self, state, now):
        self.state = state
        self.changed_at = now

    def observe(self, node_id, wl_report, now, src_down=False):
        """A heartbeat's report of this workload (or None when the node no longer lists it);
        returns the new state when it changed."""
        if self.state == "starting" and node_id == self.dst and wl_report:
            if wl_report.get("state") == "running" and wl_report.get("n", 0) > 0:
                self._to("done" if (src_down or not self.src_alive) else "handing_over", now)
                return self.state
        if self.state == "handing_over" and node_id == self.src:
            if wl_report is None or wl_report.get("state") in ("done", "stopped", "failed"):
                self._to("done", now)
                return self.state
        return None

    def step(self, now, cfg, src_down=False):
        """Time-driven progress; returns the new state when it changed."""
        if self.state == "starting" and now - self.changed_at > cfg["move_timeout_s"]:
            self._to("aborted", now)
            return self.state
        if self.state == "handing_over":
            if src_down or now - self.changed_at > cfg["move_timeout_s"] + cfg["handover_lead_s"]:
                self._to("done", now)
                return self.state
        return None


def plan_moves(triggered, placements, workloads, rnd, cooldown, busy, now, incoming=()):
    """Choose this cycle's moves.

    triggered: {node id: reason}; placements: [(workload, node)]; workloads: {id: workload};
    rnd: a placement.Round for the fleet now; cooldown: Cooldown; busy: nodes already in a
    move; incoming: (workload, node) targets of moves in progress. Returns
    [(workload, src, dst, reason)], and {workload: why it could not move}.

    A node runs one worker per workload id, so two replicas of a workload never land on one
    node: not on a node that already hosts it, is taking it over in a move, or was chosen for
    it earlier in this cycle (even when the sources are dead and targets may otherwise repeat).
    """
    moves, stuck = [], {}
    sources_used, targets_used = set(), set()
    chosen_for = {}  # workload -> nodes it is moving to
    for wid, node in incoming:
        chosen_for.setdefault(wid, set()).add(node)
    for src in sorted(triggered):
        reason = triggered[src]
        dead = reason == "down"
        if src in busy and not dead:
            continue
        here = [workloads[w] for w, n in placements if n == src and w in workloads]
        # Lower priority work leaves an overloaded node first; a dead node's best work first.
        here.sort(key=lambda wl: ((-1 if dead else 1) * wl.get("priority", 0), wl["id"]))
        for wl in here:
            if not dead and src in sources_used:
                break
            forced = dead or reason == "drain"
            if not forced and not cooldown.may_move(wl["id"], now):
                stuck[wl["id"]] = "moved less than %.0f s ago" % cooldown.cfg["cooldown_s"]
                continue
            others = {n for w, n in placements if w == wl["id"]} | chosen_for.get(wl["id"], set())
            exclude = others | set(triggered) | (targets_used if not dead else set()) | set(busy)
            dst, why = rnd.best(wl, exclude=exclude, ignore_cooldown=forced)
            if dst is None:
                stuck[wl["id"]] = "no node can take it: " + ("; ".join(sorted(set(why))) or "no other node")
                continue
            rnd.take(wl, dst)
            chosen_for.setdefault(wl["id"], set()).add(dst)
            moves.append((wl["id"], src, dst, reason))
            sources_used.add(src)
            targets_used.add(dst)
    return moves, stuck
