"""Chaos soak: a simulated fleet under one random fault at a time, and what the faults cost.

Six boards (three MicroPython Pico W, two rpi4 and an rpi-zero-2w on CPython), each behind its
own cuttable link, a mosquitto restarted on the same port, the controller as a child process on
one registry file (controller/sim/chaos.py has the rig, the faults and every measurement). Two
workloads: `mcu` (MicroPython boards, 2 replicas, 3/s) and `pi` (CPython boards, 2 replicas,
5/s), so each has a spare board to move to. For --duration seconds, one fault at a time with
3-6 calm seconds between (the first six faults are each kind once, in a seeded order):

  board_kill (power off 1-4 s, boot on the same flash), board_stop (SIGSTOP 5-15 s, SIGCONT),
  link_cut (silent 5-20 s), broker_kill (SIGKILL, restart on the same port after 1-4 s),
  broker_stop (SIGSTOP 3-12 s), controller_kill (SIGKILL, restart after 1-4 s).

Then everything is restored, the fleet settles (every node's results caught up) and is stopped.

JSON keys: seed; faults ({kind: count}); results (stored); lost (results nodes produced that the
registry lacks, less outbox drops and results refused past a hand-over point); duplicates (by
(node, boot, seq) and by input position across nodes); reinferred_inputs (input positions one
node processed more than once); lane_gap_p99_s / lane_gap_max_s (per fault: seconds from its end
until every workload lane has an accepted result again, less the time a later fault that began
meanwhile was in progress; p99 and max over the faults); lane_gap_raw_max_s (the same without
that allowance);
false_offlines (node_offline events for nodes no fault touched in the 15 s before);
safe_mode_entries (nodes that entered safe mode); controller_cpu_broker_down_pct (the
controller's CPU time while the broker was killed or stopped, % of one core). With --details,
a second JSON object before it (on stderr) says which lane, fault and node each number comes from.

Targets the fleet aims for: lost 0, duplicates 0, reinferred_inputs 0, lane_gap_max_s <= 10,
false_offlines 0, safe_mode_entries 0, controller_cpu_broker_down_pct < 5. The benchmark reports;
it exits 0 whatever the numbers, and names the missed targets on stderr.

Prints progress to stderr and one JSON line last on stdout.
Usage: .venv/bin/python tools/bench/chaos.py [--duration 300] [--seed 1] [--keep]
"""
import argparse
import json
import random
import shutil
import signal
import sys
import tempfile

from edgefleet.controller.sim import chaos


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of faults (default 300)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--settle", type=float, default=120.0, help="longest wait for the fleet to catch up after")
    ap.add_argument("--details", action="store_true", help="print the measurements' details on stderr")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (registry, logs) and say where")
    args = ap.parse_args(argv)
    # A SIGTERM (a timeout, a kill) unwinds like Ctrl-C, so the rig stops every process it started.
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    workdir = tempfile.mkdtemp(prefix="edgefleet-chaos-")
    try:
        summary, details = chaos.run(workdir, args.duration, args.seed, random.Random(args.seed),
                                     settle_timeout=args.settle)
    finally:
        if args.keep:
            chaos.say("work directory kept: %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.details:
        print(json.dumps(details, indent=1), file=sys.stderr)
    for key, value, target in chaos.missed_targets(summary):
        chaos.say("target missed: %s = %s (target %s%s)" % (
            key, value, "<= " if key.endswith("_s") else "< " if key.endswith("_pct") else "", target))
    worst = details["lane_recovery"][:1]
    if worst:
        chaos.say("longest lane recovery: %s" % worst[0])
    print(json.dumps(summary), flush=True)
    return summary, details


if __name__ == "__main__":
    main()
