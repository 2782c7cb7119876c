#!/usr/bin/env python3
"""The MicroPython node's heap: what the runtime holds after boot, and the smallest
`-X heapsize` at which a node boots, connects and serves a real workload (bisected), per model.
The board profiles' heaps are printed beside them as the baseline the firmware must fit.

Last line: {"boot_heap_used", "min_heap": {model: bytes}, "profiles": {board: heap_bytes}}
"""
import json
import sys
import tempfile

from edgefleet.boards import catalog
from edgefleet.controller.broker import MosquittoBroker
from edgefleet.controller.sim.nodeprobe import NodeProbe

STEP = 4096
RESULTS_NEEDED = 5


def serves(broker, heap, model, attempt):
    workload = [{"id": "w", "model": model, "rate": 20, "input": {"kind": "samples"}}]
    with tempfile.TemporaryDirectory() as root:
        probe = NodeProbe(broker, root, "heap-%d-%d" % (heap, attempt), "rpi-pico-w", heap_override=heap)
        with probe.start(workload):
            ok = probe.wait_for(lambda p: len(p.of_kind("result")) >= RESULTS_NEEDED, 20)
            boot = probe.boot_event()
            return bool(ok), boot["data"]["heap_used"] if boot else None


def smallest_heap(broker, model, low, high):
    """Bisect between a heap known to fail (low) and one known to work (high)."""
    attempt = 0
    while high - low > STEP:
        mid = (low + high) // 2 // 1024 * 1024
        attempt += 1
        ok, _ = serves(broker, mid, model, attempt)
        print("%s at %d bytes: %s" % (model, mid, "serves" if ok else "fails"), file=sys.stderr)
        if ok:
            high = mid
        else:
            low = mid
    return high


def main():
    profiles = {p["name"]: p["heap_bytes"] for p in catalog.all_profiles() if p["runtime"] == "micropython"}
    broker = MosquittoBroker().start()
    try:
        ok, boot_used = serves(broker, max(profiles.values()), "digits_dense", 0)
        if not ok:
            raise SystemExit("the node does not serve even at %d bytes" % max(profiles.values()))
        report = {"boot_heap_used": boot_used, "min_heap": {}, "profiles": profiles}
        for model in ("digits_dense", "digits_conv"):
            report["min_heap"][model] = smallest_heap(broker, model, 32 * 1024, max(profiles.values()))
    finally:
        broker.stop()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
