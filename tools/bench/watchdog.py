#!/usr/bin/env python3
"""Recovery benchmark: how fast a node serves again after each kind of fault, on a real
MicroPython node (a simulated Pico W) and a real CPython node (a simulated Raspberry Pi 4).

Each node runs one digits_dense workload at 50 inferences/s with fault injection allowed and a
worker beat timeout of 1 s (watchdog 3 s). Faults go in through the node's `fault` command:

- crash_*: the worker's loop raises; time from the crash (the node's own uptime in its crash
  event) to the first result the restarted worker produced (node uptime of that result).
- hang_*: the worker stops beating; time from the last result before the hang to the first after
  (node uptimes), i.e. the beat timeout plus the restart.
- node_hang_*: the whole event loop spins (`freeze`); only the watchdog helps: time from the
  command's reply to the first result of the next boot reaching the broker (host clock).
- crash_loop_degraded: seconds from a persistent crash (`crashloop`) to the node's retained
  status saying degraded (host clock), or null if it never did within the intensity period.

Baseline, side by side: what recovery costs without a supervisor, when the only remedy is to
restart the whole node (as systemd's Restart= or a reset would): `restart_p50_s` / `restart_p99_s`,
from a hard reset of the board to its first result (host clock).

Percentiles over the trials (--trials for crashes; hangs and resets use fewer, they take
seconds each). Prints progress to stderr and one JSON line last:
{"micropython": {...}, "cpython": {...}} with the keys crash_p50_s, crash_p99_s, hang_p50_s,
hang_p99_s, node_hang_p99_s, crash_loop_degraded, restart_p50_s, restart_p99_s.

Usage: .venv/bin/python tools/bench/watchdog.py [--trials 20]
"""
import argparse
import json
import sys
import tempfile
import time

from edgefleet.controller.broker import MosquittoBroker
from edgefleet.controller.sim.nodeprobe import NodeProbe

WORKER_BEAT_MS = 1000
WATCHDOG_MS = 3000
SUPERVISION = {"worker_beat_ms": WORKER_BEAT_MS, "watchdog_ms": WATCHDOG_MS, "stable_after_ms": 600000,
               # Boots are quick on purpose here: no safe mode in the middle of the run.
               "quick_boot_limit": 1000}
# Timing runs: restarts must not run into the intensity limit (5 in 60 s) the crash-loop run checks.
TIMING = {"allow_faults": True, "supervision": dict(SUPERVISION, intensity=100000)}
CRASH_LOOP = {"allow_faults": True, "supervision": SUPERVISION}
WORKLOAD = {"id": "w", "model": "digits_dense", "rate": 50, "input": {"kind": "samples"}}
BOARDS = (("micropython", "rpi-pico-w"), ("cpython", "rpi4"))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))], 3)


def fault(probe, kind, wl="w"):
    reply = probe.command("fault", {"kind": kind, "wl": wl})
    if not reply or not reply["ok"]:
        raise SystemExit("fault %s refused: %s" % (kind, reply))
    return time.monotonic()


def events(probe, kind):
    return [e for e in probe.of_kind("event") if e["kind"] == kind]


def results_after(probe, boot, up_ms):
    return [r for r in probe.of_kind("result") if r["boot"] == boot and r["up"] > up_ms]


def current_boot(probe):
    return max([e["boot"] for e in events(probe, "boot")] or [1])


def inject(probe, fault_kind, event_kind, timeout):
    """Inject a fault and wait for the node's event of it: (boot, the event's uptime in ms)."""
    boot, seen = current_boot(probe), len(events(probe, event_kind))
    fault(probe, fault_kind)
    reported = probe.wait_for(lambda p: events(p, event_kind)[seen:], timeout)
    if not reported:
        raise SystemExit("no %s event" % event_kind)
    return boot, reported[0]["data"]["up"]


def crash_trials(probe, trials):
    times = []
    for _ in range(trials):
        boot, up = inject(probe, "raise", "crash", 10)
        found = probe.wait_for(lambda p: results_after(p, boot, up), 10)
        times.append((min(r["up"] for r in found) - up) / 1000)
        time.sleep(0.2)
    return times


def hang_trials(probe, trials):
    times = []
    for _ in range(trials):
        boot, up = inject(probe, "hang", "hang", 15)
        last = max(r["up"] for r in probe.of_kind("result") if r["boot"] == boot and r["up"] < up)
        found = probe.wait_for(lambda p: results_after(p, boot, up), 15)
        times.append((min(r["up"] for r in found) - last) / 1000)
        time.sleep(0.3)
    return times


def first_result_of_boot(probe, boot, since, timeout):
    found = probe.wait_for(lambda p: [t for t, r in p.timed("result") if r["boot"] == boot and t > since], timeout)
    return min(found) if found else None


def node_hang_trials(probe, trials):
    times = []
    for _ in range(trials):
        boot = current_boot(probe)
        sent = fault(probe, "freeze", wl=None)
        back = first_result_of_boot(probe, boot + 1, sent, WATCHDOG_MS / 1000 + 30)
        if back is None:
            raise SystemExit("the node did not come back from a frozen event loop")
        times.append(back - sent)
        time.sleep(0.5)
    return times


def restart_trials(probe, trials):
    times = []
    for _ in range(trials):
        boot = current_boot(probe)
        probe.wait_for(lambda p: [r for r in p.of_kind("result") if r["boot"] == boot], 30)
        start = time.monotonic()
        probe.board.reset()
        back = first_result_of_boot(probe, boot + 1, start, 60)
        if back is None:
            raise SystemExit("the node did not serve after a reset")
        times.append(back - start)
        probe.wait_for(lambda p: current_boot(p) == boot + 1, 10)
        time.sleep(0.5)
    return times


def crash_loop(probe):
    sent = fault(probe, "crashloop")
    degraded = probe.wait_for(lambda p: [t for t, s in p.timed("status") if s["state"] == "degraded" and t > sent], 60)
    return round(min(degraded) - sent, 3) if degraded else None


def bench_runtime(broker, runtime, board, trials):
    with tempfile.TemporaryDirectory() as root:
        with NodeProbe(broker, root, "wd-" + runtime, board, config=TIMING).start([WORKLOAD]) as probe:
            if not probe.wait_for(lambda p: len(p.of_kind("result")) >= 20, 60):
                raise SystemExit("%s node never served" % runtime)
            log("%s: crashes" % runtime)
            crashes = crash_trials(probe, trials)
            log("%s: hangs" % runtime)
            hangs = hang_trials(probe, max(3, trials // 4))
            log("%s: whole-node hangs (watchdog)" % runtime)
            node_hangs = node_hang_trials(probe, 3)
            log("%s: baseline, hard resets" % runtime)
            restarts = restart_trials(probe, 3)
    with tempfile.TemporaryDirectory() as root:
        with NodeProbe(broker, root, "wdl-" + runtime, board, config=CRASH_LOOP).start([WORKLOAD]) as probe:
            if not probe.wait_for(lambda p: len(p.of_kind("result")) >= 5, 60):
                raise SystemExit("%s node never served" % runtime)
            log("%s: crash loop" % runtime)
            degraded = crash_loop(probe)
    return {"crash_p50_s": percentile(crashes, 50), "crash_p99_s": percentile(crashes, 99),
            "hang_p50_s": percentile(hangs, 50), "hang_p99_s": percentile(hangs, 99),
            "node_hang_p99_s": percentile(node_hangs, 99), "crash_loop_degraded": degraded,
            "restart_p50_s": percentile(restarts, 50), "restart_p99_s": percentile(restarts, 99),
            "trials": {"crash": len(crashes), "hang": len(hangs), "node_hang": len(node_hangs), "restart": len(restarts)},
            "beat_timeout_s": WORKER_BEAT_MS / 1000, "watchdog_s": WATCHDOG_MS / 1000}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    broker = MosquittoBroker().start()
    try:
        report = {runtime: bench_runtime(broker, runtime, board, args.trials) for runtime, board in BOARDS}
    finally:
        broker.stop()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
