#!/usr/bin/env python3
"""Offline delivery benchmark: the flash outbox on MicroPython, and replaying an outage's backlog.

1. Outbox append rate at the smallest MCU heap (the min heap_bytes of the MCU profiles): runs
   tools/bench/outbox_probe.py under the MicroPython unix port on firmware compiled to .mpy (as a
   board's image holds it), appending ~150-byte result payloads with that board's outbox policy
   (flush every `flush_records`, acks trimming as a connected node's would). Beside it, the naive
   approach (open/append/close per result) as `append_per_s_unbatched`, write amplification
   (bytes written to flash / payload bytes) and flash writes per result for both, and
   `outbox_ram_bytes`: the heap the outbox module and a used Outbox hold.
2. Replay: a real MicroPython node (a Pico W by default, its outbox capacity raised when the
   backlog would not fit, so that capacity drops do not blur the delivery numbers) with no broker
   reachable accumulates a backlog equal to 10 minutes of the demo MCU workload (4 results/s ->
   2400 results). To take ~1 minute instead of 10, the node runs the workload at 40 results/s from
   an assignment cached on its flash. Then mosquitto and the real controller (ControllerService) come up; `replay_per_s` is the
   backlog over the time from the broker being back until the registry holds all of it.
   `lost`: results missing from the registry (gaps) up to the newest one stored; `duplicates`:
   rows stored twice (0 by the primary key, checked anyway); `duplicate_deliveries`: results
   the controller received more than once (FleetController.duplicates).

Prints progress to stderr and one JSON line last on stdout.
Usage: .venv/bin/python tools/bench/offline.py [--backlog N] [--offline-rate R]
"""
import argparse
import copy
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

from edgefleet import models
from edgefleet.boards import catalog
from edgefleet.controller.install import image
from edgefleet.controller.broker import MosquittoBroker
from edgefleet.controller.netutil import free_port
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.simboard import McuBoard
from edgefleet.controller.sim.simfleet import simulated_heap_bytes
from edgefleet.controller.sim.waiting import poll
from edgefleet.firmware.outbox import scan_records
from edgefleet.controller.extras import micropython_binary

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE = os.path.join(HERE, "outbox_probe.py")
DEMO_MCU_RATE = 4.0          # controller/sim/demo.py: the digits-mcu workload
OUTAGE_S = 600               # the outage the backlog stands for
PROBE_RECORDS = 2000
# A connected node is acknowledged about once a second: at the demo rate, every 4 results;
# the probe acks every 40 (a node at ten times the demo rate), trimming as a node does.
PROBE_ACK_EVERY = 40
NODE = "mcu-bench"
# The ESP32 profile (the smallest heap) cannot run a cached assignment before its first
# connect (MemoryError, see the report), so the replaying node is a Pico W.
REPLAY_BOARD = "rpi-pico-w"
# A result record on flash: ~150-170 bytes of payload and a 16-byte header.
RECORD_BYTES = 190


def log(msg):
    print("offline bench: " + msg, file=sys.stderr, flush=True)


def smallest_mcu_profile():
    mcus = [p for p in catalog.all_profiles() if p["runtime"] == "micropython"]
    return min(mcus, key=lambda p: p["heap_bytes"])


def measure_appends(profile, work):
    code = os.path.join(work, "mpy")
    image.write_mpy_tree(code, image.firmware_files())
    box = profile["outbox"]
    flash = os.path.join(work, "probe-flash")
    os.makedirs(flash)
    env = dict(os.environ, MICROPYPATH=code + ":.frozen")
    cmd = [micropython_binary(), "-X", "heapsize=%d" % profile["heap_bytes"], PROBE, flash, str(PROBE_RECORDS),
           str(box["capacity_bytes"]), str(box["segment_bytes"]), str(box["flush_records"]), str(PROBE_ACK_EVERY)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=work)
    if proc.returncode != 0:
        raise SystemExit("outbox probe failed (%d): %s" % (proc.returncode, (proc.stdout + proc.stderr)[-2000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def records_on_flash(outbox_dir):
    """(result records, highest seq) in a node's outbox directory, read from the host."""
    count, last = 0, 0
    try:
        names = sorted(n for n in os.listdir(outbox_dir) if n.endswith(".seg"))
    except OSError:
        return 0, 0
    for name in names:
        try:
            with open(os.path.join(outbox_dir, name), "rb") as f:
                data = f.read()
        except OSError:
            continue  # trimmed or dropped while we listed
        for item in scan_records(data):
            if item[0] != "bad" and item[1] == "result":
                count += 1
                last = max(last, item[3])
    return count, last


def stored_seqs(db_path):
    db = sqlite3.connect(db_path)
    try:
        return [seq for (seq,) in db.execute("SELECT seq FROM results WHERE node=? AND boot=1 ORDER BY seq", (NODE,))]
    finally:
        db.close()


def stored_rows_twice(db_path):
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT COUNT(*) FROM (SELECT 1 FROM results GROUP BY node, boot, seq HAVING COUNT(*) > 1)"
                          ).fetchone()[0]
    finally:
        db.close()


def measure_replay(profile, work, backlog, offline_rate):
    workload = {"id": "digits-mcu", "model": "digits_dense", "rate": DEMO_MCU_RATE, "replicas": 1,
                "input": {"kind": "samples"}, "constraints": {"runtime": "micropython"}}
    port = free_port()  # nothing listens here until the outage ends
    flash = os.path.join(work, "node-flash")
    cfg = image.node_config(NODE, copy.deepcopy(profile), "127.0.0.1", port, simulated=True, keepalive=10)
    image.write_image(flash, cfg, model_names=["digits_dense"])
    os.makedirs(os.path.join(flash, "data"))
    cached = {"v": 1, "epoch": 1, "wl": [{"id": workload["id"], "model": workload["model"], "rate": offline_rate,
                                          "input": workload["input"]}]}
    with open(os.path.join(flash, "data", "assign.json"), "w") as f:
        json.dump(cached, f)
    outbox_dir = os.path.join(flash, "data", "outbox")
    db_path = os.path.join(work, "fleet.db")
    board = McuBoard(NODE, flash, simulated_heap_bytes(profile), console_log=os.path.join(work, "console.log"))
    broker = controller = None
    try:
        board.start()
        started = time.monotonic()
        # Generous: a loaded 2-core machine may not keep the node at its full offline rate.
        if not poll(lambda: records_on_flash(outbox_dir)[0] >= backlog, backlog / offline_rate * 2 + 30, every=1.0):
            raise SystemExit("the node built only %d of %d results offline; console: %s" % (
                records_on_flash(outbox_dir)[0], backlog, tail(os.path.join(work, "console.log"))))
        offline_s = time.monotonic() - started
        broker = MosquittoBroker(port=port).start()
        back = time.monotonic()
        pending, newest_seq = records_on_flash(outbox_dir)
        log("backlog of %d results (newest seq %d) built in %.0f s; broker back" % (pending, newest_seq, offline_s))
        controller = ControllerService(broker.host, broker.port, db_path=db_path, manifests=models.manifests(),
                                       workloads=[workload]).start()
        done = poll(lambda: len(stored_seqs(db_path)) >= newest_seq and stored_seqs(db_path)[newest_seq - 1]
                        == newest_seq, 120)
        replay_s = time.monotonic() - back
        if not done:
            log("backlog not fully stored after %.0f s" % replay_s)
        seqs = stored_seqs(db_path)
        # Nothing after the node's newest result at broker-up counts: it is new traffic.
        newest = max(seqs) if seqs else 0
        lost = newest - len(set(seqs))
        duplicate_deliveries = controller.fleet.duplicates if controller.fleet is not None else None
        outbox_dropped = max(0, newest_seq - pending)  # dropped by the capacity policy before broker-up
        return {
            "backlog": pending, "backlog_newest_seq": newest_seq, "backlog_built_s": round(offline_s, 1),
            "backlog_offline_rate": offline_rate, "replay_s": round(replay_s, 2),
            "replay_per_s": round(pending / replay_s, 1) if done else None, "replay_complete": bool(done),
            "lost": lost, "duplicates": stored_rows_twice(db_path), "duplicate_deliveries": duplicate_deliveries,
            "outbox_dropped_before_replay": outbox_dropped,
        }
    finally:
        board.stop()
        if controller is not None:
            controller.stop()
        if broker is not None:
            broker.stop()


def tail(path, size=1500):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-size:]
    except OSError:
        return ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=int(DEMO_MCU_RATE * OUTAGE_S),
                        help="results accumulated offline (default: 10 minutes at the demo's 4/s)")
    parser.add_argument("--offline-rate", type=float, default=40.0,
                        help="the node's rate while building the backlog (results/s)")
    parser.add_argument("--replay-board", default=REPLAY_BOARD, help="board profile of the replaying node")
    parser.add_argument("--skip-appends", action="store_true", help="only the replay")
    args = parser.parse_args()
    profile = smallest_mcu_profile()
    replay_profile = copy.deepcopy(catalog.load(args.replay_board))
    fits = int(args.backlog * 1.3 * RECORD_BYTES)
    if replay_profile["outbox"]["capacity_bytes"] < fits:
        # Measure delivery, not the capacity policy: give the outbox room for the whole backlog.
        replay_profile["outbox"]["capacity_bytes"] = fits
    work = tempfile.mkdtemp(prefix="edgefleet-offline-bench-")
    try:
        log("outbox probe on %s (heap %d, outbox %s)" % (profile["name"], profile["heap_bytes"], profile["outbox"]))
        appends = {} if args.skip_appends else measure_appends(profile, work)
        log("appends: %s" % json.dumps(appends))
        replay = measure_replay(replay_profile, work, args.backlog, args.offline_rate)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {"board": profile["name"], "heap_bytes": profile["heap_bytes"], "outbox_policy": profile["outbox"]}
    summary.update(appends)
    summary.update(replay)
    summary["replay_board"] = args.replay_board
    summary["replay_outbox_policy"] = replay_profile["outbox"]
    summary["backlog_how"] = ("%d results (%d s of the demo's %.0f/s MCU workload) built by running the node at %.0f/s "
                              "with no broker reachable; replay timed from broker start to all stored" % (
                                  replay["backlog"], OUTAGE_S, DEMO_MCU_RATE, args.offline_rate))
    ordered = {k: summary.pop(k, None) for k in ("append_per_s", "replay_per_s", "backlog", "lost", "duplicates",
                                           "outbox_ram_bytes")}
    ordered.update(summary)
    print(json.dumps(ordered))


if __name__ == "__main__":
    main()
