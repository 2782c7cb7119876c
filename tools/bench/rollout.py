#!/usr/bin/env python3
"""Rollout benchmark: a signed bundle to a fleet of real MicroPython nodes over MQTT.

A fleet of N simulated Pico W boards (the MicroPython unix port at the board's heap, booted from
A/B slot images holding the bundle public key), mosquitto and the controller placing one digits workload on
every node. Then:

1. all_healthy_s: `deploy` of a new version (firmware precompiled with mpy-cross + the digits
   model) as a gated rollout - a canary, then the rest in one batch, each wave confirmed healthy
   (link up, workload running and past its first inference on the new slot) and soaked for
   --soak seconds with no failing workload - from the first byte sent until the last wave passed.
   Beside it, the baseline: the same bundle sent to every node at once, ungated (one wave, no
   soak), as `baseline_all_healthy_s`.
2. rollback_s: a further version deployed to all nodes in one wave whose health gate fails
   (a latency bound no inference meets); the time from the wave's failure until every node is
   back on its previous slot, rebooted, with its workload running again.

Prints progress to stderr and one JSON line last on stdout:
  {"nodes", "bundle_bytes", "all_healthy_s", "rollback_s", "baseline_all_healthy_s", ...,
   "timeline", "rollback_timeline": [[seconds from the deploy's start, what happened], ...]}
Usage: .venv/bin/python tools/bench/rollout.py [--nodes 50]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from edgefleet import models
from edgefleet.controller.deploy import bundle
from edgefleet.controller.broker import MosquittoBroker
from edgefleet.controller.deploy.deployer import Deployer
from edgefleet.controller.sim.waiting import poll
from edgefleet.controller.deploy.rollout import Gate, Rollout
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.simfleet import SimFleet

KEY = os.urandom(32)
BOARD = "rpi-pico-w"


def log(msg):
    print("[rollout] %s" % msg, file=sys.stderr, flush=True)


def wait(predicate, timeout, what):
    if not poll(predicate, timeout, every=0.5):
        raise SystemExit("timed out after %.0f s waiting for %s" % (timeout, what))


def deploy(broker, data, version, nodes, canary, gate, window_ms=30000):
    rollout = Rollout(data, bundle.bundle_id(data), version, nodes, canary=canary, batch=len(nodes), gate=gate,
                      window_ms=window_ms, wave_timeout_s=300)
    with Deployer(broker.host, broker.port) as deployer:
        started = time.monotonic()
        deployer.run(rollout, timeout_s=600)
    return rollout, started


def timeline(rollout, started):
    """The rollout's log as [seconds since the deploy started, what happened], for the timeline
    docs/figures/ draws (tools/docs_figures.py)."""
    return [[round(t - started, 2), text] for t, text in rollout.log]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--soak", type=float, default=2.0, help="seconds each wave must stay healthy")
    parser.add_argument("--rate", type=float, default=1.0, help="inferences per second per node")
    args = parser.parse_args()
    nodes = ["mcu-%02d" % i for i in range(args.nodes)]
    root = tempfile.mkdtemp(prefix="edgefleet-rollout-")
    broker = MosquittoBroker().start()
    workloads = [{"id": "digits", "model": "digits_dense", "rate": args.rate, "replicas": args.nodes,
                  "input": {"kind": "samples"}, "constraints": {"runtime": "micropython"}}]
    fleet = SimFleet(os.path.join(root, "fleet"), broker.host, broker.port, [(n, BOARD) for n in nodes],
                     keepalive=5, slotted=True, key=KEY)
    controller = ControllerService(broker.host, broker.port, db_path=os.path.join(root, "fleet.db"),
                                   manifests=models.manifests(), workloads=workloads)
    out = {"nodes": args.nodes}
    try:
        controller.start()
        t = time.monotonic()
        fleet.start()

        def all_delivering():
            snap = controller.snapshot()
            return snap and len(snap["nodes"]) == args.nodes and all(n["results"] > 0 for n in snap["nodes"])

        wait(all_delivering, 300, "every node delivering results")
        log("%d nodes up and inferring in %.1f s" % (args.nodes, time.monotonic() - t))
        # Rising sequence numbers of their own: a bench leaves the operator's counter alone.
        builds = {v: bundle.build(BOARD, v, KEY, models=["digits_dense"], mpy_arch="x64", seq=seq)
                  for seq, v in enumerate(("0.2.0", "0.3.0", "0.4.0"), 1)}
        out["bundle_bytes"] = len(builds["0.2.0"])

        rollout, started = deploy(broker, builds["0.2.0"], "0.2.0", nodes, 1, Gate(soak_s=args.soak))
        if rollout.status != "done":
            raise SystemExit("rollout failed: %s" % rollout.error)
        out["all_healthy_s"] = round(rollout.log[-1][0] - started, 2)
        out["waves"] = len(rollout.waves)
        out["timeline"] = timeline(rollout, started)
        log("gated rollout: all healthy in %.1f s (%d waves)" % (out["all_healthy_s"], len(rollout.waves)))

        rollout, started = deploy(broker, builds["0.3.0"], "0.3.0", nodes, args.nodes, Gate(soak_s=0.0, min_results=0))
        if rollout.status != "done":
            raise SystemExit("baseline rollout failed: %s" % rollout.error)
        out["baseline_all_healthy_s"] = round(rollout.log[-1][0] - started, 2)
        log("baseline (all at once, ungated): all healthy in %.1f s" % out["baseline_all_healthy_s"])

        rollout, started = deploy(broker, builds["0.4.0"], "0.4.0", nodes, args.nodes,
                                  Gate(soak_s=args.soak, max_latency_us=1))
        if rollout.rolled_back_at is None or len(rollout.rolled_back) != args.nodes:
            raise SystemExit("failed wave not rolled back: %s (%d of %d)" % (rollout.error, len(rollout.rolled_back),
                                                                              args.nodes))
        out["rollback_s"] = round(rollout.rolled_back_at - rollout.failed_at, 2)
        out["rollback_timeline"] = timeline(rollout, started)
        out["failed_wave_error"] = rollout.error
        log("failed wave of %d rolled back in %.1f s" % (args.nodes, out["rollback_s"]))
    finally:
        fleet.stop()
        controller.stop()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    ordered = {k: out.get(k) for k in ("nodes", "bundle_bytes", "all_healthy_s", "rollback_s")}
    ordered.update({k: v for k, v in out.items() if k not in ordered})
    print(json.dumps(ordered))


if __name__ == "__main__":
    main()
