"""Fault tolerance on real nodes, MicroPython and CPython: the supervisor restarts a crashed or
hung worker, gives up on a crash loop and reports the node degraded, the watchdog resets a node
whose event loop froze (the simulated board enforces it as hardware would), the node says why
it reset, and runtime crashes in a row end in safe mode. No result the node accepted is lost."""
import pytest

from edgefleet.controller.sim.nodeprobe import NodeProbe

pytestmark = [pytest.mark.e2e]

BOARDS = [pytest.param("rpi-pico-w", marks=pytest.mark.micropython, id="micropython"),
          pytest.param("rpi4", id="cpython")]
WORKER_BEAT_MS = 1000
WATCHDOG_MS = 3000
CONFIG = {"allow_faults": True,
          "supervision": {"worker_beat_ms": WORKER_BEAT_MS, "watchdog_ms": WATCHDOG_MS, "stable_after_ms": 120000}}
WORKLOAD = {"id": "w", "model": "digits_dense", "rate": 20, "input": {"kind": "samples"}}


def _probe(mosquitto, tmp_path, board, name):
    return NodeProbe(mosquitto, str(tmp_path), name, board, config=CONFIG).start([WORKLOAD])


def _results_after(probe, boot, up_ms):
    """Results the node produced after its uptime up_ms (the node's own clock: results queued
    in its outbox before a fault may reach the broker after it)."""
    return [r for r in probe.of_kind("result") if r["boot"] == boot and r["up"] > up_ms]


def _first_result_after(probe, boot, up_ms, timeout):
    found = probe.wait_for(lambda p: _results_after(p, boot, up_ms), timeout)
    return min(r["up"] for r in found) if found else None


def _events(probe, kind):
    return [e for e in probe.of_kind("event") if e["kind"] == kind]


def _assert_no_result_lost(probe):
    """Per boot, the node's result sequence numbers that reached the broker have no gaps."""
    by_boot = {}
    for r in probe.of_kind("result"):
        by_boot.setdefault(r["boot"], set()).add(r["seq"])
    for boot, seqs in by_boot.items():
        missing = set(range(1, max(seqs) + 1)) - seqs
        assert not missing, "boot %d: results %s never arrived" % (boot, sorted(missing)[:10])


def _fault(probe, kind, wl="w"):
    reply = probe.command("fault", {"kind": kind, "wl": wl})
    assert reply and reply["ok"], reply
    return reply


@pytest.mark.parametrize("board", BOARDS)
def test_a_crashed_worker_serves_again_within_a_second(board, mosquitto, tmp_path):
    with _probe(mosquitto, tmp_path, board, "crash-" + board.split("-")[-1]) as probe:
        assert probe.wait_for(lambda p: len(p.of_kind("result")) >= 10, 30)
        kinds = ["raise", "segv"] if board == "rpi4" else ["raise"]
        for kind in kinds:
            seen = len(_events(probe, "crash"))
            _fault(probe, kind)
            crashed = probe.wait_for(lambda p: [(0, e) for e in _events(p, "crash")[seen:]], 10)
            assert crashed, "no crash event after %s" % kind
            event = crashed[0][1]
            assert event["data"]["child"] == "w", event
            crash_up = event["data"]["up"]
            back = _first_result_after(probe, 1, crash_up, 10)
            assert back is not None, "no results after the %s" % kind
            # A crash of the serving loop keeps the inference process; a dead process is replaced
            # by a new one, which has to load its interpreter.
            limit_ms = 1000 if kind == "raise" else 5000
            assert back - crash_up < limit_ms, "serving again %d ms after the %s" % (back - crash_up, kind)
        assert probe.board.boots == 1, "the node itself restarted"
        probe.wait_for(lambda p: len(_results_after(p, 1, crash_up)) >= 10, 10)
        _assert_no_result_lost(probe)
        # The restarted worker resumes where it was: no input inferred twice, none skipped.
        _assert_no_input_inferred_twice(probe)
        _assert_no_input_skipped(probe)


@pytest.mark.parametrize("board", BOARDS)
def test_a_hung_worker_is_restarted_within_its_beat_timeout(board, mosquitto, tmp_path):
    with _probe(mosquitto, tmp_path, board, "hang-" + board.split("-")[-1]) as probe:
        assert probe.wait_for(lambda p: len(p.of_kind("result")) >= 10, 30)
        _fault(probe, "hang")
        hung = probe.wait_for(lambda p: _events(p, "hang"), 10)
        assert hung and hung[0]["data"]["child"] == "w" and "no beat" in hung[0]["msg"], hung
        hang_up = hung[0]["data"]["up"]
        last_before = max(r["up"] for r in probe.of_kind("result") if r["up"] < hang_up)
        back = _first_result_after(probe, 1, hang_up, 10)
        assert back is not None, "no results after the hang"
        # Serving stopped at the hang and resumed within the beat timeout and a second.
        limit_ms = WORKER_BEAT_MS + 1000 + (5000 if board == "rpi4" else 0)
        assert back - last_before <= limit_ms, "no results for %d ms" % (back - last_before)
        assert probe.board.boots == 1
        _assert_no_result_lost(probe)
        _assert_no_input_skipped(probe)


def _assert_no_input_inferred_twice(probe):
    # Results told apart by (boot, seq): one result delivered twice (a QoS 1 resend) is no re-inference.
    seen = {}
    for r in probe.of_kind("result"):
        seen.setdefault(r["in"], set()).add((r["boot"], r["seq"]))
    twice = sorted(p for p, results in seen.items() if len(results) > 1)
    assert not twice, "inputs inferred more than once: %s" % twice[:20]


def _assert_no_input_skipped(probe):
    positions = sorted({r["in"] for r in probe.of_kind("result")})
    skipped = sorted(set(range(positions[0], positions[-1] + 1)) - set(positions))
    assert not skipped, "inputs never inferred: %s" % skipped[:20]


def test_an_inference_process_frozen_mid_batch_is_replaced_and_its_batch_read_again(mosquitto, tmp_path):
    """A Pi worker's inference process stops (SIGSTOP, as when the board froze) while it holds a
    batch: the supervisor kills and replaces it, and the inputs of that batch are inferred by the
    new process instead of being skipped."""
    import os
    import signal
    from test_workers import _children
    with _probe(mosquitto, tmp_path, "rpi4", "frozen-4") as probe:
        assert probe.wait_for(lambda p: len(p.of_kind("result")) >= 10, 30)
        (inference,) = probe.wait_for(lambda p: _children(p.board.pid), 10)
        os.kill(inference, signal.SIGSTOP)
        hung = probe.wait_for(lambda p: _events(p, "hang"), 10)
        assert hung, "the frozen inference process was not noticed"
        count = len(probe.of_kind("result"))
        assert probe.wait_for(lambda p: len(p.of_kind("result")) >= count + 20, 20), "no results after the hang"
        assert probe.board.boots == 1
        _assert_no_result_lost(probe)
        _assert_no_input_skipped(probe)


@pytest.mark.parametrize("board", BOARDS)
def test_a_crash_loop_is_given_up_and_the_node_reports_itself_degraded(board, mosquitto, tmp_path):
    with _probe(mosquitto, tmp_path, board, "loop-" + board.split("-")[-1]) as probe:
        assert probe.wait_for(lambda p: len(p.of_kind("result")) >= 5, 30)
        _fault(probe, "crashloop")
        degraded = probe.wait_for(lambda p: [s for s in p.of_kind("status") if s["state"] == "degraded"], 60)
        assert degraded, "the node never reported itself degraded"
        event = _events(probe, "degraded")
        assert event and "5 restarts within 60 s" in event[0]["msg"] and "InjectedFault" in event[0]["msg"], event
        crashes = len(_events(probe, "crash"))
        assert crashes == 6, "expected the first crash and five restarts, saw %d crashes" % crashes
        hb = probe.wait_for(lambda p: [h for h in p.of_kind("hb") if h["wl"] and h["wl"][0]["state"] == "given_up"], 5)
        assert hb, "heartbeats do not show the workload given up"
        # The controller moves the workload away: the node is whole again.
        probe.assign([])
        assert probe.wait_for(lambda p: p.of_kind("status")[-1]["state"] == "online", 10)
        reply = probe.command("crashes")
        assert reply["ok"] and len(reply["data"]["records"]) == 6 and reply["data"]["records"][-1]["child"] == "w"


@pytest.mark.parametrize("board", BOARDS)
def test_a_frozen_node_is_reset_by_the_watchdog_and_reports_why(board, mosquitto, tmp_path):
    with _probe(mosquitto, tmp_path, board, "freeze-" + board.split("-")[-1]) as probe:
        assert probe.wait_for(lambda p: len(p.of_kind("result")) >= 10, 30)
        _fault(probe, "freeze", wl=None)
        reboot = probe.wait_for(lambda p: [e for e in _events(p, "boot") if e["boot"] == 2], WATCHDOG_MS / 1000 + 20)
        assert reboot, "the watchdog did not reset the frozen node"
        assert reboot[0]["data"]["reset"] == "watchdog", reboot[0]["data"]
        assert probe.board.watchdog_resets == 1
        assert probe.wait_for(lambda p: [r for r in p.of_kind("result") if r["boot"] == 2], 20), "not serving after the reset"
        _assert_no_result_lost(probe)


@pytest.mark.parametrize("board", BOARDS)
def test_runtime_crashes_in_a_row_end_in_safe_mode_until_the_operator_resumes(board, mosquitto, tmp_path):
    with _probe(mosquitto, tmp_path, board, "safe-" + board.split("-")[-1]) as probe:
        # A commanded reboot is no fault: it does not count towards safe mode.
        assert probe.wait_for(lambda p: [e for e in _events(p, "boot") if e["boot"] == 1], 30)
        assert probe.command("reboot")["ok"]
        for boot in (2, 3, 4):
            assert probe.wait_for(lambda p: [e for e in _events(p, "boot") if e["boot"] == boot], 30), boot
            _fault(probe, "panic", wl=None)
        safe = probe.wait_for(lambda p: [e for e in _events(p, "boot") if e["boot"] == 5], 30)
        assert safe and safe[0]["data"]["safe_mode"] and safe[0]["data"]["reset"] == "crash", safe
        assert "injected panic" in safe[0]["data"]["reset_detail"], safe
        assert [e["data"]["quick_boots"] for e in _events(probe, "boot")] == [0, 0, 1, 2, 3]
        assert probe.wait_for(lambda p: _events(p, "safe_mode"), 10)
        assert probe.wait_for(lambda p: p.of_kind("status")[-1]["state"] == "safe", 10)
        hb = probe.wait_for(lambda p: [h for h in p.of_kind("hb") if h["boot"] == 5], 10)
        assert hb and hb[-1]["wl"] == [], "workloads run in safe mode"
        assert not [r for r in p_results(probe) if r["boot"] == 5]
        assert probe.command("resume")["ok"]
        normal = probe.wait_for(lambda p: [e for e in _events(p, "boot") if e["boot"] == 6], 30)
        assert normal and not normal[0]["data"]["safe_mode"], normal
        assert probe.wait_for(lambda p: [r for r in p.of_kind("result") if r["boot"] == 6], 20)


def p_results(probe):
    return probe.of_kind("result")
