"""Placement and live migration as pure logic, on a simulated clock: the failure detector, the
triggers, anti-flap, the make-before-break move and exactly-once across moves (the registry's
results and the stream ledger), fencing re-confirmation, operator commands and scoring."""
import json
import math
import random

import pytest

from edgefleet.boards import catalog
from edgefleet.controller.fleet import migration, placement
from edgefleet.controller.fleet.detector import PhiAccrualDetector
from edgefleet.controller.fleet.controller import FleetController
from edgefleet.controller.store import open_registry
from edgefleet.firmware import protocol

MANIFESTS = {"digits_dense": {"mcu_heap_bytes": 48000}}
PROFILES = {p["name"]: p for p in catalog.all_profiles()}


class Clock:
    def __init__(self):
        self.now = 1_700_000_000.0

    def __call__(self):
        return self.now


def hello(node, board="rpi4", boot=1, labels=()):
    profile = PROFILES[board]
    return json.dumps({"v": 1, "node": node, "board": board, "runtime": profile["runtime"], "fw": "0.1.0",
                       "boot": boot, "caps": {"heap": profile["heap_bytes"], "flash": 1, "backends": ["litert"],
                                              "models": ["digits_dense"], "labels": list(labels)}})


def hb(node, seq, cpu=10.0, power=None, wl=(), boot=1, temp=None, fenced=None):
    msg = {"v": 1, "node": node, "boot": boot, "seq": seq, "up": seq * 1000, "cpu": cpu, "mem_free": 1,
           "mem_total": 2, "power": power or {"src": "mains", "pct": None, "mw": None}, "temp": temp,
           "wl": list(wl)}
    if fenced is not None:
        msg["fenced"] = fenced
    return json.dumps(msg)


def result(node, seq, pos, wl="w", boot=1):
    return json.dumps({"v": 1, "node": node, "boot": boot, "seq": seq, "wl": wl, "up": seq, "label": 1,
                       "score": 0.5, "us": 10, "in": pos})


def running(wid="w", n=5, state="running"):
    return {"id": wid, "state": state, "n": n, "err": None}


class Sim:
    """A controller fed by fake nodes: heartbeats every simulated second, results at `rate`."""

    def __init__(self, nodes, workloads, **settings):
        self.clock = Clock()
        self.registry = open_registry(":memory:")
        self.ctl = FleetController(self.registry, manifests=MANIFESTS, clock=self.clock, settings=settings)
        self.ctl.declare(workloads)
        self.seq = {}
        self.hb_seq = {}
        self.cpu = {n: 10.0 for n, _ in nodes}
        self.power = {}
        self.boot = {}
        self.effects = []
        for node, board in nodes:
            self.effects += self.ctl.handle("ef/node/%s/hello" % node, hello(node, board))
        self.effects += self.ctl.tick()

    def assigned(self, node):
        """The node's latest assignment, as its specs by workload id."""
        topic = "ef/node/%s/assign" % node
        msgs = [json.loads(e.payload) for e in self.effects if e.topic == topic]
        return {s["id"]: s for s in msgs[-1]["wl"]} if msgs else {}

    def heartbeat(self, node, wl=(), **kw):
        self.hb_seq[node] = self.hb_seq.get(node, 0) + 1
        kw.setdefault("cpu", self.cpu[node])
        kw.setdefault("power", self.power.get(node))
        kw.setdefault("boot", self.boot.get(node, 1))
        self.effects += self.ctl.handle("ef/node/%s/hb" % node, hb(node, self.hb_seq[node], wl=wl, **kw))

    def emit(self, node, pos, wl="w"):
        self.seq[node] = self.seq.get(node, 0) + 1
        self.ctl.handle("ef/node/%s/result" % node, result(node, self.seq[node], pos, wl))

    def second(self, alive=None):
        self.clock.now += 1.0
        for node in alive if alive is not None else self.cpu:
            self.heartbeat(node)
        self.effects += self.ctl.tick()

    def moves(self):
        return [e for e in self.registry.events(limit=10000) if e["kind"] == "moved"]


@pytest.fixture
def sims():
    made = []

    def make(*args, **kw):
        sim = Sim(*args, **kw)
        made.append(sim)
        return sim
    yield make
    for sim in made:
        sim.registry.close()


WL = {"id": "w", "model": "digits_dense", "rate": 5.0, "replicas": 1, "input": {"kind": "samples"}}


# -- failure detector -----------------------------------------------------------------------

def test_detector_tolerates_heartbeat_jitter_and_declares_silence():
    rng = random.Random(7)
    det = PhiAccrualDetector()
    t = 0.0
    worst = 0.0
    for _ in range(3000):  # 20% jitter on a 1 s heartbeat, checked every 100 ms in between
        gap = 1.0 + rng.uniform(-0.2, 0.2)
        for k in range(1, 10):
            worst = max(worst, det.phi("a", t + gap * k / 10))
        t += gap
        det.heartbeat("a", t)
    assert worst < 1.0, worst
    assert not det.is_down("a", t + 2.0)
    # Silence: down after about three missed heartbeats, not before two.
    down_at = next(s / 10 for s in range(0, 100) if det.is_down("a", t + s / 10))
    assert 2.0 < down_at < 4.0, down_at
    # Silence while the controller itself could not hear does not count.
    assert not det.is_down("a", t + 10, heard_since=t + 9)


def test_last_will_is_down_at_once_until_the_node_is_heard_again():
    det = PhiAccrualDetector()
    det.heartbeat("a", 0.0)
    det.last_will("a")
    assert det.is_down("a", 0.1)
    det.heartbeat("a", 0.5)
    assert not det.is_down("a", 0.6)


# -- triggers -------------------------------------------------------------------------------

def test_each_trigger_names_its_reason():
    cfg = migration.settings()
    watch = migration.TriggerWatch(cfg)
    node = {"id": "a", "state": "online", "telemetry": {"cpu": 95.0, "power": {"src": "mains"}}}
    watch.observe("a", 95.0, 0.0)
    assert watch.reason(node, 29.0) is None
    watch.observe("a", 95.0, 29.0)
    assert watch.reason(node, 30.0).startswith("cpu: 95% > 85% for 30 s")
    watch.observe("a", 50.0, 31.0)  # one heartbeat under the watermark restarts the clock
    assert watch.reason(node, 70.0) is None
    zero = PROFILES["rpi-zero-2w"]
    low = {"id": "b", "state": "online", "telemetry": {"power": {"src": "battery", "pct": 15.0, "mw": 900}}}
    assert watch.reason(low, 0, profile=zero) == "battery: 15% < 20%"
    thin = {"id": "b", "state": "online", "telemetry": {"power": {"src": "battery", "pct": 30.0, "mw": 20000}}}
    assert watch.reason(thin, 0, profile=zero).startswith("battery: 0.6 h of budget")
    hot = {"id": "c", "state": "online", "telemetry": {"power": {"src": "mains", "throttled": True}}}
    assert watch.reason(hot, 0) == "thermal: throttled"
    assert watch.reason({"id": "c", "state": "online", "telemetry": {"temp": 85.0}}, 0) == "thermal: 85 C"
    assert watch.reason({"id": "d", "state": "degraded", "telemetry": {}}, 0) == "degraded"
    assert watch.reason({"id": "d", "state": "online", "telemetry": {}}, 0, draining=True) == "drain"
    assert watch.reason({"id": "d", "state": "offline", "telemetry": {}}, 0, down=True) == "down"


# -- scoring --------------------------------------------------------------------------------

def _node(nid, board, cpu=0.0, power=None, state="online", labels=()):
    profile = PROFILES[board]
    return {"id": nid, "board": board, "runtime": profile["runtime"], "state": state,
            "caps": {"heap": profile["heap_bytes"], "models": ["digits_dense"], "labels": list(labels)},
            "telemetry": {"cpu": cpu, "power": power or {"src": "mains", "pct": None, "mw": None}}}


def test_scoring_prefers_mains_and_headroom_and_breaks_ties_by_id():
    batt = {"src": "battery", "pct": 90.0, "mw": 1500.0}
    nodes = [_node("a-zero", "rpi-zero-2w", cpu=5, power=batt), _node("b-pi4", "rpi4", cpu=30),
             _node("c-pi4", "rpi4", cpu=30)]
    placed, _ = placement.plan([WL], nodes, [], PROFILES, MANIFESTS)
    assert placed == [("w", "b-pi4")]  # mains beats a lightly loaded battery board; b before c
    placed, _ = placement.plan([WL], nodes, [], PROFILES, MANIFESTS, policy="load_only")
    assert placed == [("w", "a-zero")]  # the baseline looks at CPU alone
    # Hysteresis: nothing is placed on a node at or over 60% CPU.
    busy = [_node("x", "rpi4", cpu=61), _node("y", "rpi4", cpu=75)]
    placed, pending = placement.plan([WL], busy, [], PROFILES, MANIFESTS)
    assert placed == [] and "x's CPU is at 61%, placement needs under 60%" in pending["w"]


def test_a_node_in_safe_mode_gets_no_new_work_and_the_reason_says_so():
    # An idle board in safe mode looks like the best target by load and power; placement must
    # skip it and say why when nothing else is left.
    nodes = [_node("a-safe", "rpi4", state="safe"), _node("b-busy", "rpi4", cpu=40)]
    placed, _ = placement.plan([WL], nodes, [], PROFILES, MANIFESTS)
    assert placed == [("w", "b-busy")]
    placed, pending = placement.plan([WL], nodes[:1], [], PROFILES, MANIFESTS)
    assert placed == [] and "node a-safe is safe" in pending["w"]


def test_labels_priority_and_a_model_too_big_for_every_node_stays_pending():
    nodes = [_node("cam", "rpi4", labels=("camera",)), _node("plain", "rpi4")]
    wls = [dict(WL, id="needs-cam", constraints={"labels": ["camera"]}),
           dict(WL, id="huge", resources={"arena_bytes": 64 << 30}),
           dict(WL, id="low", priority=0, resources={"cpu_share": 50}),
           dict(WL, id="high", priority=5, resources={"cpu_share": 50})]
    placed, pending = placement.plan(wls, nodes, [], PROFILES, MANIFESTS)
    assert ("needs-cam", "cam") in placed
    assert "huge" in pending and "needs 68719476736 arena bytes" in pending["huge"]
    assert "0 of 1 replicas placed" in pending["huge"]
    # Both nodes had room for one 50% workload beside the rest: the higher priority one got it first.
    assert any(w == "high" for w, _ in placed)


# -- the move, make-before-break, exactly once --------------------------------------------------

def test_sustained_cpu_moves_the_workload_make_before_break_and_exactly_once(sims):
    sim = sims([("a", "rpi4"), ("b", "rpi4")], [WL], cpu_high_for_s=30, handover_lead_s=2)
    (src,) = [n for w, n in sim.registry.placements()]
    dst = "b" if src == "a" else "a"
    assert sim.assigned(src)["w"]["input"]["start"] == 0
    pos = 0
    sim.cpu[src] = 95.0
    for _ in range(31):  # 31 s over the watermark, 5 inputs a second from the old node
        for _ in range(5):
            sim.emit(src, pos)
            pos += 1
        sim.clock.now += 1.0
        sim.heartbeat(src, wl=[running()])
        sim.heartbeat(dst)
        sim.effects += sim.ctl.tick()
    (move,) = sim.ctl.moves.values()
    assert (move.src, move.dst, move.state) == (src, dst, "starting")
    handover = move.handover
    assert handover == pos + 10  # 2 s of input ahead at 5/s
    # The new node starts at the hand-over point; the old one keeps running, unbounded, for now.
    assert sim.assigned(dst)["w"]["input"] == {"kind": "samples", "start": handover}
    assert "until" not in sim.assigned(src)["w"]["input"]
    assert sorted(sim.registry.placements()) == [("w", "a"), ("w", "b")]
    # The new worker runs ahead in the stream; the old one produces up to and past H (dropped).
    for p in range(handover, handover + 5):
        sim.emit(dst, p)
    for p in range(pos, handover + 3):
        sim.emit(src, p)
    sim.heartbeat(dst, wl=[running()])
    assert move.state == "handing_over"
    assert sim.assigned(src)["w"]["input"]["until"] == handover
    sim.heartbeat(src, wl=[running(state="done")])
    assert sim.registry.placements() == [("w", dst)]
    assert sim.assigned(src) == {}
    assert [e["msg"].split(" (")[-1] for e in sim.moves()] == ["cpu: 95% > 85% for 30 s)"]
    assert sim.ctl.out_of_range == 3
    rows = sim.registry.db.execute("SELECT node, pos FROM accepted WHERE workload='w' ORDER BY pos").fetchall()
    assert [r[1] for r in rows] == list(range(handover + 5)), "every input once, none twice, none missing"
    assert {r[0] for r in rows if r[1] < handover} == {src} and {r[0] for r in rows if r[1] >= handover} == {dst}
    assert sim.registry.result_counts() == {src: handover, dst: 5}


def test_a_topic_stream_hands_over_past_the_newest_input_the_old_node_received(sims):
    # Inputs published over MQTT come at the publisher's pace: the old node has received up to
    # `seen` (its heartbeat says so) while its results lag behind. The new node only gets what is
    # published after it subscribes, so the hand-over point lies lead_s of input past `seen`,
    # not past the results.
    topic_wl = dict(WL, input={"kind": "topic", "buffer": 16})
    sim = sims([("a", "rpi4"), ("b", "rpi4")], [topic_wl], handover_lead_s=2)
    (src,) = [n for w, n in sim.registry.placements()]
    dst = "b" if src == "a" else "a"
    assert sim.assigned(src)["w"]["input"] == {"kind": "topic", "buffer": 16, "start": 0}
    for pos in range(100, 120):   # the publisher numbered from 100: the stream starts there
        sim.emit(src, pos)
    sim.heartbeat(src, wl=[dict(running(), seen=140, dropped=0)])
    _, effects = sim.ctl.operator.answer("move", {"workload": "w", "node": dst})
    sim.effects += effects
    (move,) = sim.ctl.moves.values()
    assert move.handover == 141 + 10, move.handover   # 2 s at 5/s past input 140, not past 119
    assert sim.assigned(dst)["w"]["input"] == {"kind": "topic", "buffer": 16, "start": 151}
    for p in range(151, 156):
        sim.emit(dst, p)
    for p in range(120, 153):
        sim.emit(src, p)
    sim.heartbeat(dst, wl=[running()])
    assert sim.assigned(src)["w"]["input"]["until"] == 151
    sim.heartbeat(src, wl=[running(state="done")])
    assert sim.registry.placements() == [("w", dst)]
    rows = sim.registry.db.execute("SELECT node, pos FROM accepted WHERE workload='w' ORDER BY pos").fetchall()
    assert [r[1] for r in rows] == list(range(100, 156))
    assert {r[0] for r in rows if r[1] < 151} == {src} and {r[0] for r in rows if r[1] >= 151} == {dst}
    assert migration.handover_position(10, 5.0, 2, True, seen=None) == 20
    assert migration.handover_position(10, 5.0, 2, True, seen=3) == 20
    assert migration.handover_position(10, 5.0, 2, False, seen=40) == 10


def test_a_dead_nodes_workload_moves_at_once_from_the_first_unaccepted_input(sims):
    sim = sims([("a", "rpi4"), ("b", "rpi4")], [WL])
    (src,) = [n for w, n in sim.registry.placements()]
    dst = "b" if src == "a" else "a"
    for p in range(7):
        sim.emit(src, p)
    sim.effects += sim.ctl.handle("ef/node/%s/status" % src, json.dumps({"v": 1, "node": src, "state": "offline", "boot": 1}))
    sim.second(alive=[dst])
    assert sim.registry.placements() == [("w", dst)]
    assert sim.assigned(dst)["w"]["input"]["start"] == 7
    sim.emit(dst, 7)
    sim.heartbeat(dst, wl=[running()])
    assert [e["kind"] for e in sim.registry.events(limit=100)].count("moved") == 1
    # The dead node comes back with results it made while cut off: those past the hand-over
    # point are not stored (the new node owns them), the ones before it are.
    sim.effects += sim.ctl.handle("ef/node/%s/hello" % src, hello(src))
    sim.emit(src, 6)  # its own position again (a re-inference): kept as its result, counted once
    sim.emit(src, 8)  # past the hand-over: the new node's
    sim.emit(dst, 6)  # the new node does not own what came before the hand-over
    assert sim.ctl.out_of_range == 2 and sim.ctl.replays == 1 and sim.ctl.duplicates == 0
    assert tuple(sim.registry.db.execute("SELECT COUNT(*), COUNT(DISTINCT pos) FROM accepted").fetchone()) == (8, 8)


def test_silence_alone_is_detected_and_the_workload_moves(sims):
    sim = sims([("a", "rpi4"), ("b", "rpi4")], [WL])
    for _ in range(20):
        sim.second()
    (src,) = [n for w, n in sim.registry.placements()]
    dst = "b" if src == "a" else "a"
    for step in range(1, 60):
        sim.clock.now += 0.1
        if step % 10 == 0:
            sim.heartbeat(dst)
        sim.effects += sim.ctl.tick()
        if sim.registry.placements() == [("w", dst)]:
            break
    assert sim.registry.placements() == [("w", dst)]
    assert 2.0 < step / 10 < 4.5, step


def test_a_move_whose_new_node_never_runs_is_aborted_and_the_old_stream_reopened(sims):
    sim = sims([("a", "rpi4"), ("b", "rpi4")], [WL], move_timeout_s=10)
    (src,) = [n for w, n in sim.registry.placements()]
    dst = "b" if src == "a" else "a"
    sim.ctl.draining.add(src)
    sim.second()
    assert len(sim.ctl.moves) == 1
    sim.ctl.draining.discard(src)
    for _ in range(12):
        sim.second()  # the new node heartbeats but never reports the workload running
    assert sim.ctl.moves == {} and sim.registry.placements() == [("w", src)]
    assert any(e["kind"] == "move_aborted" for e in sim.registry.events(limit=100))
    assert sim.ctl.ledger.owner_lane("w", src, 10_000) == 0  # open-ended again
    assert sim.ctl.ledger.owner_lane("w", dst, 10_000) is None


# A Pico W has room for one of these beside its runtime (98,304 bytes of heap for models).
ONE_PER_PICO = {"arena_bytes": 60000}


def _open_stretches(sim):
    return sorted(tuple(r) for r in sim.registry.db.execute(
        "SELECT workload, lane, node FROM streams WHERE until IS NULL"))


def test_two_moves_chained_through_a_board_that_holds_one_model(sims):
    wls = [dict(WL, id="x", resources=ONE_PER_PICO), dict(WL, id="y", resources=ONE_PER_PICO)]
    sim = sims([(n, "rpi-pico-w") for n in "abcd"], wls)
    assert sorted(sim.registry.placements()) == [("x", "a"), ("y", "b")]
    assert ask(sim, "move", workload="y", node="d")[0]
    # b runs y until y's hand-over is done: x cannot join it there before that.
    ok, error = ask(sim, "move", workload="x", node="b")
    assert not ok and error.startswith("cannot move x to b: ") and "beside its runtime and workloads" in error, error
    sim.heartbeat("d", wl=[running("y")])
    sim.heartbeat("b", wl=[running("y", state="done")])
    assert ask(sim, "move", workload="x", node="b")[0]
    sim.heartbeat("b", wl=[running("x")])
    sim.heartbeat("a", wl=[running("x", state="done")])
    sim.second()
    assert sorted(sim.registry.placements()) == [("x", "b"), ("y", "d")]
    assert _open_stretches(sim) == [("x", 0, "b"), ("y", 0, "d")]


@pytest.mark.parametrize("how", ["chained", "model gone"])
def test_a_move_whose_source_stops_fitting_leaves_its_workload_one_lane(sims, how):
    # y moves from b to d, and b stops having room for y before the move ends: a move brings x
    # there (such a chain may be in the registry a controller takes over), or b reboots without
    # the model on its flash.
    wls = [dict(WL, id="x", resources=ONE_PER_PICO), dict(WL, id="y", resources=ONE_PER_PICO)]
    sim = sims([(n, "rpi-pico-w") for n in "abcd"], wls)
    reconciler, state = sim.ctl.reconciler, sim.ctl.state
    sim.effects += reconciler.start_move(state.workload("y"), "b", "d", "operator")
    if how == "chained":
        sim.effects += reconciler.start_move(state.workload("x"), "a", "b", "operator")
        sim.heartbeat("b", wl=[running("x"), running("y")])
        sim.heartbeat("a", wl=[running("x", state="done")])
        x_on, b_runs = "b", [running("x")]
    else:
        sim.boot["b"] = 2
        bare = json.loads(hello("b", "rpi-pico-w", boot=2))
        bare["caps"]["models"] = []
        sim.effects += sim.ctl.handle("ef/node/b/hello", json.dumps(bare))
        x_on, b_runs = "a", []
    sim.second()
    # The planner leaves y to its move: no replica in b's stead, no lane beside the move's.
    assert sorted(sim.registry.placements()) == sorted([("x", x_on), ("y", "b"), ("y", "d")])
    assert _open_stretches(sim) == [("x", 0, x_on), ("y", 0, "d")]
    sim.heartbeat("d", wl=[running("y")])
    sim.heartbeat("b", wl=b_runs)
    assert sim.ctl.moves == {}
    sim.second()
    assert sorted(sim.registry.placements()) == [("x", x_on), ("y", "d")]
    assert _open_stretches(sim) == [("x", 0, x_on), ("y", 0, "d")]


# -- anti-flap ------------------------------------------------------------------------------

def _run_sine(sim, minutes, low=40.0, high=95.0, period_s=60.0, on_all=False):
    t0 = sim.clock.now
    for _ in range(int(minutes * 60)):
        t = sim.clock.now - t0
        load = low + (high - low) * (0.5 + 0.5 * math.sin(2 * math.pi * t / period_s))
        hosts = {n for _, n in sim.registry.placements()}
        for node in sim.cpu:
            sim.cpu[node] = load if (on_all or node in hosts) else 20.0
        sim.clock.now += 1.0
        for node in sim.cpu:
            sim.heartbeat(node, wl=[running()] if node in hosts else [])
        sim.effects += sim.ctl.tick()


def _move_times(sim):
    return [e["ts"] for e in sim.moves()]


def test_sine_load_moves_a_workload_at_most_once_per_ten_minutes(sims):
    sim = sims([("a", "rpi4"), ("b", "rpi4"), ("c", "rpi4")], [WL])
    _run_sine(sim, 40)  # 40 simulated minutes of 40-95% with a 60 s period on the workload's node
    times = _move_times(sim)
    assert all(b - a >= 600 for a, b in zip(times, times[1:])), times
    assert len(times) <= 4
    # The harsh case: a 20-minute period keeps the host above 85% for minutes at a time, and
    # every node it could go to is loaded the same way: it still moves at most once per cooldown.
    harsh = sims([("a", "rpi4"), ("b", "rpi4"), ("c", "rpi4")], [WL])
    _run_sine(harsh, 60, low=30.0, high=100.0, period_s=1200.0)
    times = _move_times(harsh)
    assert times, "a sustained overload must move the workload"
    assert all(b - a >= 300 for a, b in zip(times, times[1:])), times


def test_no_move_back_within_the_cooldown_and_one_move_per_node_per_cycle(sims):
    wls = [dict(WL, id="w1"), dict(WL, id="w2"), dict(WL, id="w3")]
    sim = sims([("a", "rpi4"), ("b", "rpi4"), ("c", "rpi4"), ("d", "rpi4")], wls, cpu_high_for_s=5)
    for wid in ("w1", "w2", "w3"):  # the operator gathers all three on a
        if (wid, "a") in sim.registry.placements():
            continue
        sim.ctl.operator._op_move(wid, "a")
        (move,) = sim.ctl.moves.values()
        sim.heartbeat("a", wl=[running(wid)])
        sim.heartbeat(move.src, wl=[running(wid, state="done")])
    assert sorted(n for _, n in sim.registry.placements()) == ["a", "a", "a"]
    sim.cpu["a"] = 95.0
    started = []
    for _ in range(8):
        sim.second()
        started.append(len(sim.ctl.moves))
    # Three workloads on an overloaded node leave one per cycle, not all at once.
    assert max(started) == 1 and len(sim.ctl.moves) == 1
    move = next(iter(sim.ctl.moves.values()))
    assert move.src == "a"
    blocked = sim.ctl.cooldown.blocked_targets(sim.clock.now)
    assert blocked == {}
    sim.heartbeat(move.dst, wl=[running(move.workload)])
    sim.heartbeat("a", wl=[running(move.workload, state="done")])
    assert (move.workload, "a") in sim.ctl.cooldown.blocked_targets(sim.clock.now)
    rnd = sim.ctl.reconciler._round(sim.ctl.reconciler._fleet_view(sim.clock.now), {}, [], sim.clock.now)
    sim.cpu["a"] = 5.0
    sim.second()
    why = rnd.admits(dict(WL, id=move.workload), dict(sim.registry.node("a"), state="online"))
    assert why is not None and "cooldown" in why


# -- fencing and operator commands ----------------------------------------------------------------

def test_lease_every_tick_and_a_fenced_node_is_reconfirmed(sims):
    sim = sims([("a", "rpi4")], [WL])
    sim.effects = []
    sim.second()
    leases = [json.loads(e.payload) for e in sim.effects if e.topic == "ef/ctrl/lease"]
    assert len(leases) == 1 and leases[0]["ctrl"] == "ctrl" and not any(e.retain for e in sim.effects if e.topic == "ef/ctrl/lease")
    sim.effects = []
    sim.heartbeat("a", fenced=True)
    assert "w" in sim.assigned("a")
    sim.effects = []
    sim.heartbeat("a", fenced=True)  # rate-limited
    assert sim.assigned("a") == {}


def ask(sim, op, **args):
    """An operator request (op_req) through the controller's message path: (ok, answer or error)."""
    request_id = "r%d" % len(sim.effects)
    effects = sim.ctl.handle("ef/ctrl/op/req", json.dumps({"v": 1, "id": request_id, "op": op, "args": args}))
    sim.effects += effects
    replies = [protocol.decode("op_reply", e.payload) for e in effects if e.topic == "ef/ctrl/op/reply/" + request_id]
    assert [r["part"] for r in replies] == list(range(replies[0]["parts"])), replies
    if not replies[0]["ok"]:
        return False, replies[0]["error"]
    return True, json.loads("".join(r["data"] for r in replies))


def test_operator_requests_act_through_the_controllers_message_path(sims):
    sim = sims([("a", "rpi4"), ("b", "rpi4")], [WL])
    (src,) = [n for w, n in sim.registry.placements()]
    dst = "b" if src == "a" else "a"
    assert ask(sim, "move", workload="nope", node=dst) == (False, "no workload 'nope'")
    assert ask(sim, "move", workload="w", node=dst) == (True, {"message": "moving w from %s to %s" % (src, dst)})
    assert ask(sim, "move", workload="w", node=dst)[0] is False
    assert ask(sim, "move", workload="w", node=dst, speed="fast") == (False, "move takes workload, node, source, not speed")
    assert ask(sim, "move", node=dst) == (False, "move needs workload")
    sim.heartbeat(dst, wl=[running()])
    sim.heartbeat(src, wl=[running(state="done")])
    assert sim.registry.placements() == [("w", dst)]
    assert ask(sim, "drain", node=dst)[0]
    sim.second()
    (move,) = sim.ctl.moves.values()
    assert (move.src, move.dst, move.reason) == (dst, src, "drain")
    ok, answer = ask(sim, "apply", workloads=[WL, dict(WL, id="w2")])
    assert ok and answer["message"].startswith("applied: 2 workloads (1 added")
    # A plan changes nothing; a bad workload is refused with the fleet file's words, and nothing changes.
    ok, answer = ask(sim, "plan", workloads=[WL])
    assert ok and answer["plan"]["remove"] == ["w2"] and len(sim.ctl.state.workloads()) == 2
    ok, error = ask(sim, "apply", workloads=[WL, dict(WL, id="w3", rate=-1)])
    assert not ok and "'rate' must be a number > 0" in error and len(sim.ctl.state.workloads()) == 2
    # Every audit event committed is published once, for `events --follow`.
    kinds = [json.loads(e.payload)["ev"]["kind"] for e in sim.ctl.audit()]
    assert "drain" in kinds and "apply" in kinds and sim.ctl.audit() == []


def test_a_big_answer_comes_in_parts_that_fit_the_reply_limit():
    from edgefleet.controller.fleet.operator import MAX_PARTS, PART_CHARS, reply_effects
    answer = {"nodes": [{"id": "n%d" % i, "note": 'quote " and \\ backslash ' * 20} for i in range(2000)]}
    effects = reply_effects("ef", "big", answer)
    assert len(effects) > 10
    parts = [protocol.decode("op_reply", e.payload) for e in effects]
    assert all(len(e.payload) <= protocol.limit("op_reply") for e in effects)
    assert [p["part"] for p in parts] == list(range(len(parts))) and {p["parts"] for p in parts} == {len(parts)}
    assert json.loads("".join(p["data"] for p in parts)) == answer
    (too_big,) = reply_effects("ef", "huge", {"text": "x" * (PART_CHARS * MAX_PARTS)})
    reply = protocol.decode("op_reply", too_big.payload)
    assert not reply["ok"] and "over the %d the controller sends" % (PART_CHARS * MAX_PARTS) in reply["error"]
