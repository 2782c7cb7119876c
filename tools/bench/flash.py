#!/usr/bin/env python3
"""Serial flashing benchmark: `edgefleet flash` against `mpremote cp` on the same simulated link.

Two simulated Pico W boards (controller/simboard.McuBoard: the real MicroPython unix port) start
from an empty flash, their UARTs paced to the same baud rate (default 115200, 8N1: 11.52 KB/s
each way), as a real board's serial link is. One gets the node image with edgefleet's flasher
(controller/install/flasher.py), the other the same files with `mpremote connect URL resume cp -r ...`
(mpremote's own file copy, raw-paste mode on). Throughput is the image's bytes over the wall
time of the whole command, connection and start-up included, in kilobits per second (1000 bits),
the unit of the link's rate. Both boards' flash must then equal the image, byte for byte.

`resync_s` is the median of three re-flashes of the unchanged image onto the first board while
its node runs, with the same command as the first flash (interrupt, compare the tree's digest,
reboot), the image build included, and so is the 0.3 s that pyserial's socket:// handler sleeps
when it closes (a real serial port closes at once).

Prints progress to stderr and one JSON line last on stdout:
  {"edgefleet_kbps", "mpremote_kbps", "ratio", "resync_s", "baud", "image_bytes", "image_files",
   "edgefleet_wire_bytes", "edgefleet_s", "mpremote_s"}
Usage: .venv/bin/python tools/bench/flash.py [--baud 115200] [--board rpi-pico-w]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from edgefleet.boards import catalog
from edgefleet.controller.install import flasher, image, keys
from edgefleet.controller.sim.simboard import McuBoard
from edgefleet.controller.sim.simfleet import simulated_heap_bytes

NODE = "bench-flash"
BROKER = ("127.0.0.1", 1883)   # nothing needs to listen: the node retries, the bench does not care
MPREMOTE = os.path.join(os.path.dirname(sys.executable), "mpremote")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def build_image(dest, board, key):
    cfg = image.node_config(NODE, catalog.load(board), BROKER[0], BROKER[1], simulated=True)
    image.write_slotted_image(dest, cfg, key=key)   # what `edgefleet flash` puts on an empty board
    return flasher.local_tree(dest)


def tree_digests(root):
    return {path: digest for path, _local, _size, digest in flasher.local_tree(root)}


def start_board(work, name, board, baud):
    flash = os.path.join(work, name)
    os.makedirs(flash)
    profile = catalog.load(board)
    mcu = McuBoard(name, flash, simulated_heap_bytes(profile), baud=baud, console_log=os.path.join(work, name + ".log"))
    mcu.start()
    if not mcu.wait_console(b">>> ", timeout=15):
        raise SystemExit("board %s did not reach its REPL" % name)
    return mcu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--board", default="rpi-pico-w")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="edgefleet-bench-flash-")
    os.environ["EDGEFLEET_HOME"] = os.path.join(work, "home")
    key = keys.load_or_create()
    boards = []
    try:
        tree = os.path.join(work, "image")
        entries = build_image(tree, args.board, key)
        total = sum(size for _path, _local, size, _digest in entries)
        log("image: %d files, %d bytes; link %d baud" % (len(entries), total, args.baud))

        ours = start_board(work, "edgefleet", args.board, args.baud)
        boards.append(ours)
        position = ours.console.total
        started = time.monotonic()
        result = flasher.flash(ours.serial_url, args.board, node_id=NODE, broker=BROKER, baudrate=args.baud)
        edgefleet_s = time.monotonic() - started
        log("edgefleet: %s" % result.summary())

        theirs = start_board(work, "mpremote", args.board, args.baud)
        boards.append(theirs)
        names = sorted(os.listdir(tree))
        started = time.monotonic()
        proc = subprocess.run([MPREMOTE, "connect", theirs.serial_url, "resume", "cp", "-r"] + names + [":./"],
                              cwd=tree, capture_output=True, text=True, timeout=600)
        mpremote_s = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit("mpremote failed: %s" % proc.stderr[-1000:])
        log("mpremote: %d files in %.1f s" % (len(entries), mpremote_s))

        expected = tree_digests(tree)
        dirs, files = flasher.image_roots(entries)
        for mcu in boards:
            # What the image owns on the board; the node writes its own files beside it.
            got = {path: digest for path, digest in tree_digests(mcu.flash_dir).items()
                   if path.split("/")[0] in dirs or path in files}
            if got != expected:
                raise SystemExit("board %s does not hold the image: %s" % (
                    mcu.name, sorted(set(got.items()) ^ set(expected.items()))[:5]))

        resyncs = []
        for _ in range(3):
            if not ours.wait_console(b"edgefleet-node: ", position, 20):
                raise SystemExit("the flashed node did not boot: %r" % ours.console.since(0)[-1000:])
            time.sleep(1.0)   # the node is past its imports and running
            position = ours.console.total
            started = time.monotonic()
            again = flasher.flash(ours.serial_url, args.board, node_id=NODE, broker=BROKER, baudrate=args.baud)
            resyncs.append(time.monotonic() - started)
            if again.changed:
                raise SystemExit("re-flashing the unchanged image changed %s" % again.written)
            log("resync: %.2f s" % resyncs[-1])

        edgefleet_kbps = total * 8 / 1000.0 / edgefleet_s
        mpremote_kbps = total * 8 / 1000.0 / mpremote_s
        print(json.dumps({
            "edgefleet_kbps": round(edgefleet_kbps, 1),
            "mpremote_kbps": round(mpremote_kbps, 1),
            "ratio": round(edgefleet_kbps / mpremote_kbps, 2),
            "resync_s": round(statistics.median(resyncs), 3),
            "baud": args.baud,
            "image_bytes": total,
            "image_files": len(entries),
            "edgefleet_wire_bytes": result.wire_bytes,
            "edgefleet_s": round(edgefleet_s, 2),
            "mpremote_s": round(mpremote_s, 2),
        }))
    finally:
        for mcu in boards:
            mcu.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
