#!/usr/bin/env python3
"""Failover benchmark: from a node's death to the first result of its workload from the node
that took it over, stored by the controller; and how many workloads moved off nodes that were
alive while every heartbeat carried 20% jitter.

A live fleet on this machine: a real mosquitto, the controller service (controller/fleet/service.py)
with its SQLite registry on disk, and NODES simulated Raspberry Pi Pico W boards - the real
MicroPython unix port running the node firmware from its own flash image (controller/sim/simboard.py
McuBoard, ~14 MB and well under 1% of a core each, which is what lets 50 of them share two cores).
Half as many workloads as nodes (digits_dense through the MicroPython int8 engine, 2 inferences
a second, one replica each), so every node that dies hosts work and there are spare nodes to take
it. Each board's sim.json (boards/hal_sim.py) puts it on mains power and spreads every heartbeat
interval uniformly over 1 s +-20% (`hb_jitter`) for the whole run.

After a soak (--soak seconds of jittered heartbeats, no failure), each round picks hosting nodes
at random and fails them at the same moment:
  kill  power off: SIGKILL of the board's process group (controller/sim/simboard.py power_off), and
        the board stays off. Its TCP connection closes, so the broker publishes its Last Will.
  hang  SIGSTOP of the board's process group: the process freezes with its connection open, so
        no Last Will comes until the broker's keepalive runs out (1.5 x 10 s); only the silence
        tells.
A trial's time runs from the signal to the earliest `received` timestamp in the registry's
results table of a result for the failed node's workload from any other node, or from the failed
node itself after a reboot (a hung board's watchdog resets it: if that comes before the
controller gives up on the node, the work resumes where it was, counted in `in_place`); the
round ends when every failed node's work has such a result (or after 60 s: unrecovered).

Both failure detectors run the same fleet, workloads, failures and migration code, one after
the other in this run, each on a fresh broker and a freshly booted fleet:
  project   the controller as shipped: phi-accrual on heartbeat arrivals (threshold 8, spread
            floored at 0.2 s, 1 s pause allowed) and the Last Will marking a node down at once
            (controller/fleet/detector.py).
  baseline  a fixed heartbeat timeout of 10 s (the controller's former HEARTBEAT_TIMEOUT_S; the
            Kubernetes node-controller style: down after a fixed grace period without a
            heartbeat), with Last Wills ignored.

JSON keys (project unless prefixed): nodes; p50_s, p99_s (kill trials); hang_p50_s, hang_p99_s;
kill_trials_s, hang_trials_s (every trial's time, sorted);
false_failovers (moves of workloads off nodes that were never failed); false_suspicions (nodes
never failed that the controller marked offline); trials, hang_trials, unrecovered, in_place
(trials whose work resumed on the failed node after its watchdog reset it),
results_stored, stream_gaps (input positions of a workload's stream never stored between its
first and last stored one: lost in a failover); the same with the baseline_ prefix; hb_interval_mean_s / hb_interval_std_s: the
heartbeat inter-arrival times the project's detector held after the soak (20% uniform jitter on
1 s: std ~0.115 s, more where the machine delays the boards). Percentiles are nearest-rank.

Prints progress to stderr and one JSON line last on stdout.
Usage: .venv/bin/python tools/bench/failover.py [--nodes 50] [--quick]
"""
import argparse
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time

from edgefleet import models
from edgefleet.controller.broker import MosquittoBroker
from edgefleet.controller.fleet.controller import FleetController
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.simfleet import SimFleet, write_sim_settings

BOARD = "rpi-pico-w"
RATE = 2.0
JITTER = 0.2
BASELINE_TIMEOUT_S = 10.0
ROUND_TIMEOUT_S = 60.0
BOOT_TIMEOUT_S = 180.0


class FixedTimeoutDetector:
    """The baseline's failure detector: a node is down once silent for a fixed time, whatever
    its heartbeat history. The controller's detector interface (controller/fleet/detector.py)."""

    def __init__(self, timeout_s=BASELINE_TIMEOUT_S):
        self.timeout_s = timeout_s
        self.history = {}   # node -> last sign of life
        self.willed = set()  # deaf to Last Wills: never any

    def heartbeat(self, node_id, now, heard_since=0.0):
        self.history[node_id] = now

    def last_will(self, node_id):
        pass  # a timeout detector has no notion of a broker-reported session loss

    def forget(self, node_id):
        self.history.pop(node_id, None)

    def phi(self, node_id, now, heard_since=0.0):
        """No suspicion scale: silence as a fraction of the timeout (for the event log)."""
        last = self.history.get(node_id)
        return 0.0 if last is None else (now - max(last, heard_since)) / self.timeout_s

    def is_down(self, node_id, now, heard_since=0.0):
        last = self.history.get(node_id)
        return last is not None and now - max(last, heard_since) > self.timeout_s


class TimeoutBaselineController(FleetController):
    """The controller with the fixed-timeout detector and deaf to Last Wills."""

    def __init__(self, *args, **kwargs):
        kwargs["detector"] = FixedTimeoutDetector()
        super().__init__(*args, **kwargs)

    def _on_status(self, node_id, msg):
        if msg["state"] == "offline":
            return []
        return super()._on_status(node_id, msg)


PHASES = (("project", FleetController), ("baseline", TimeoutBaselineController))


def log(msg):
    print("failover: " + msg, file=sys.stderr, flush=True)


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))], 2)


def workloads(count):
    return [{"id": "w%02d" % i, "model": "digits_dense", "rate": RATE, "replicas": 1, "input": {"kind": "samples"},
             "resources": {"cpu_share": 5}} for i in range(count)]


def boot_fleet(fleet, count, jitter):
    for i in range(count):
        node_id = "mcu-%03d" % i
        board = fleet.add(node_id, BOARD)
        write_sim_settings(fleet.flash_dir(node_id), {"source": "mains", "hb_jitter": jitter})
        # Started at once: the serial port the board picked is free now, but the running
        # boards' MQTT connections take ephemeral ports that could claim it in the meantime.
        board.start()


def wait_ready(controller, nodes, wls, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = controller.snapshot()
        if (snap and sum(1 for n in snap["nodes"] if n["state"] == "online") == nodes
                and all(w["nodes"] and w["results"] > 0 for w in snap["workloads"])):
            return snap
        time.sleep(0.5)
    raise SystemExit("failover: the fleet did not come up with every workload producing within %.0f s" % timeout)


def hosts(controller):
    """{node: [workloads]} for online nodes that host work and take part in no move."""
    snap = controller.snapshot()
    moving = {m["from"] for m in snap["moves"]} | {m["to"] for m in snap["moves"]}
    return {n["id"]: n["workloads"] for n in snap["nodes"]
            if n["workloads"] and n["state"] == "online" and n["id"] not in moving}


def first_result_after(db, workload, node, boot, since):
    """(when, where) of the workload's first result stored after `since` from another node or
    from a later boot of `node`; (None, None) if there is none yet."""
    row = db.execute("SELECT received, node FROM results WHERE workload=? AND received>? AND (node<>? OR boot>?) "
                     "ORDER BY received LIMIT 1", (workload, since, node, boot)).fetchone()
    return (row[0], row[1]) if row else (None, None)


def current_boot(db, node):
    row = db.execute("SELECT boot FROM nodes WHERE id=?", (node,)).fetchone()
    return row[0] if row else 0


def fail(board, how):
    if how == "kill":
        board.power_off()
    else:
        os.killpg(board.pid, signal.SIGSTOP)


def run_round(controller, fleet, db, rng, kills, hangs, failed):
    candidates = sorted(n for n in hosts(controller) if n not in failed)
    if len(candidates) < kills + hangs:
        raise SystemExit("failover: only %d hosting nodes left for %d failures a round; use more --nodes"
                         % (len(candidates), kills + hangs))
    victims = rng.sample(candidates, kills + hangs)
    placed = hosts(controller)
    trials = []
    for i, node in enumerate(victims):
        how = "kill" if i < kills else "hang"
        boot = current_boot(db, node)
        at = time.time()
        fail(fleet.board(node), how)
        failed[node] = how
        trials.append({"node": node, "how": how, "at": at, "boot": boot, "workloads": placed[node], "s": None,
                       "in_place": False})
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    while time.monotonic() < deadline and any(t["s"] is None for t in trials):
        for t in trials:
            if t["s"] is None:
                firsts = [first_result_after(db, w, t["node"], t["boot"], t["at"]) for w in t["workloads"]]
                if all(when is not None for when, _ in firsts):
                    t["s"] = max(when for when, _ in firsts) - t["at"]
                    t["in_place"] = any(where == t["node"] for _, where in firsts)
        time.sleep(0.1)
    return trials


def false_alarms(db, failed):
    """(moves off nodes never failed, nodes never failed marked offline)."""
    moves = 0
    for (data,) in db.execute("SELECT data FROM events WHERE kind='move_started'"):
        if json.loads(data)["from"] not in failed:
            moves += 1
    offline = {node for (node,) in db.execute("SELECT node FROM events WHERE kind='node_offline'")}
    return moves, len(offline - set(failed))


def stream_gaps(db):
    """Input positions never accepted between the first and the last accepted one of each
    workload's lane: what a failover lost (the ledger's key already rules out doubles)."""
    row = db.execute("SELECT SUM(hi - lo + 1 - n) FROM (SELECT MIN(pos) AS lo, MAX(pos) AS hi, COUNT(*) AS n "
                     "FROM accepted GROUP BY workload, lane)").fetchone()
    return row[0] or 0


def heartbeat_spread(controller):
    """(mean, standard deviation) of the heartbeat inter-arrival times the project's detector
    holds, over all nodes: evidence of the jitter the controller really saw. None for the baseline."""
    history = getattr(controller.fleet.detector, "history", {})
    intervals = [x for h in list(history.values()) if hasattr(h, "intervals") for x in list(h.intervals)]
    if len(intervals) < 2:
        return None, None
    mean = sum(intervals) / len(intervals)
    std = math.sqrt(sum((x - mean) ** 2 for x in intervals) / len(intervals))
    return round(mean, 3), round(std, 3)


def run_phase(name, fleet_class, root, nodes, rounds, kills, hangs, soak_s, jitter, seed):
    """One detector against a fresh fleet; returns its trials and false alarms."""
    os.makedirs(root)
    db_path = os.path.join(root, "fleet.db")
    wls = workloads(max(1, nodes // 2))
    rng = random.Random(seed)
    broker = MosquittoBroker().start()
    fleet = controller = db = None
    try:
        controller = ControllerService(broker.host, broker.port, db_path=db_path, manifests=models.manifests(),
                                       workloads=wls, fleet_class=fleet_class).start()
        started = time.monotonic()
        fleet = SimFleet(os.path.join(root, "fleet"), broker.host, broker.port, [])
        boot_fleet(fleet, nodes, jitter)
        wait_ready(controller, nodes, wls, BOOT_TIMEOUT_S)
        log("%s: %d nodes up, %d workloads producing after %.0f s; soak %.0f s" % (
            name, nodes, len(wls), time.monotonic() - started, soak_s))
        time.sleep(soak_s)
        hb_mean, hb_std = heartbeat_spread(controller)
        db = sqlite3.connect(db_path, timeout=10)
        failed, trials = {}, []
        for r in range(rounds):
            done = run_round(controller, fleet, db, rng, kills, hangs, failed)
            trials.extend(done)
            log("%s round %d: %s" % (name, r + 1, ", ".join(
                "%s %s %s%s" % (t["how"], t["node"], "-" if t["s"] is None else "%.2f s" % t["s"],
                                " (in place)" if t["in_place"] else "") for t in done)))
            time.sleep(2.0)   # moves finish before the next round picks hosts
        false_moves, false_offline = false_alarms(db, failed)
        return {"trials": trials, "false_failovers": false_moves, "false_suspicions": false_offline,
                "hb_interval_mean_s": hb_mean, "hb_interval_std_s": hb_std,
                "results": db.execute("SELECT COUNT(*) FROM results").fetchone()[0], "gaps": stream_gaps(db)}
    finally:
        if db is not None:
            db.close()
        if fleet is not None:
            fleet.stop()
        if controller is not None:
            controller.stop()
        broker.stop()


def summary(phase, prefix=""):
    kill = [t["s"] for t in phase["trials"] if t["how"] == "kill" and t["s"] is not None]
    hang = [t["s"] for t in phase["trials"] if t["how"] == "hang" and t["s"] is not None]
    return {prefix + "p50_s": percentile(kill, 0.5), prefix + "p99_s": percentile(kill, 0.99),
            prefix + "hang_p50_s": percentile(hang, 0.5), prefix + "hang_p99_s": percentile(hang, 0.99),
            prefix + "false_failovers": phase["false_failovers"],
            prefix + "false_suspicions": phase["false_suspicions"],
            prefix + "trials": len(kill), prefix + "hang_trials": len(hang),
            prefix + "unrecovered": sum(1 for t in phase["trials"] if t["s"] is None),
            prefix + "in_place": sum(1 for t in phase["trials"] if t["in_place"]),
            prefix + "results_stored": phase["results"], prefix + "stream_gaps": phase["gaps"],
            # Every trial's time, for the distribution docs/figures/ draws (tools/docs_figures.py).
            prefix + "kill_trials_s": sorted(round(s, 3) for s in kill),
            prefix + "hang_trials_s": sorted(round(s, 3) for s in hang)}


def run(nodes, rounds, kills, hangs, soak_s, jitter=JITTER, seed=1, phases=PHASES):
    """The benchmark's core: every phase in turn; returns the JSON line's dict and the phases."""
    tmp = tempfile.mkdtemp(prefix="edgefleet-failover-")
    try:
        out = {"nodes": nodes}
        results = {}
        for name, fleet_class in phases:
            results[name] = run_phase(name, fleet_class, os.path.join(tmp, name), nodes, rounds, kills, hangs,
                                      soak_s, jitter, seed)
            out.update(summary(results[name], "" if name == "project" else name + "_"))
            if name == "project":
                out["hb_interval_mean_s"] = results[name]["hb_interval_mean_s"]
                out["hb_interval_std_s"] = results[name]["hb_interval_std_s"]
        out.update({"jitter": jitter, "board": BOARD + " (MicroPython unix port)", "rate": RATE,
                    "baseline": "fixed %.0f s heartbeat timeout, Last Will ignored" % BASELINE_TIMEOUT_S})
        return out, results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--kills", type=int, default=4, help="nodes powered off (SIGKILL) per round")
    ap.add_argument("--hangs", type=int, default=1, help="nodes frozen (SIGSTOP) per round")
    ap.add_argument("--soak", type=float, default=30.0, help="seconds of jittered heartbeats before the first round")
    ap.add_argument("--jitter", type=float, default=JITTER)
    ap.add_argument("--quick", action="store_true", help="8 nodes, one round of 2 kills and 1 hang, 10 s soak")
    args = ap.parse_args(argv)
    if args.quick:
        args.nodes, args.rounds, args.kills, args.hangs, args.soak = 8, 1, 2, 1, 10.0
    out, _ = run(args.nodes, args.rounds, args.kills, args.hangs, args.soak, args.jitter)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
