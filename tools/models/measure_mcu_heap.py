#!/usr/bin/env python3
"""Records in each model's manifest the heap a MicroPython node needs to run it:
`mcu_heap_bytes`: the smallest -X heapsize from which the engine (from .mpy, as on a board)
reliably imports, loads the model and runs an inference (tools/bench/engine_heap.py min_heap),
plus MARGIN. The controller places a model on an MCU only where this fits beside the runtime's
own budget (controller/fleet/placement.py), so the record must never be below what a board needs.

    python tools/models/measure_mcu_heap.py [--check]

--check re-measures and fails if a manifest is below the measured need, or so far above it
(more than MARGIN + TOLERANCE) that placement would turn away boards that can run the model.
"""
import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import engine_heap  # noqa: E402

from edgefleet import models  # noqa: E402

# The measured need moves by a few KB with things a board cannot control, such as how long the
# model's path is (it lives on the heap and shifts what fragments where): ~3 KB seen.
MARGIN = 4096
TOLERANCE = 4096


def measure():
    with tempfile.TemporaryDirectory() as image:
        engine_heap.compile_tree(image)
        return {name: engine_heap.min_heap(image, os.path.join(models.MODELS_DIR, name, "model.tflite"))
                for name in models.names()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for name, need in measure().items():
        path = os.path.join(models.MODELS_DIR, name, "manifest.json")
        with open(path) as f:
            manifest = json.load(f)
        recorded = manifest.get("mcu_heap_bytes")
        print("%s: needs %s bytes of MicroPython heap (manifest says %s)" % (name, need, recorded))
        if need is None:
            raise SystemExit("%s does not run in any heap up to 256 KB" % name)
        if args.check:
            if recorded is None or not need <= recorded <= need + MARGIN + TOLERANCE:
                stale.append(name)
            continue
        manifest["mcu_heap_bytes"] = need + MARGIN
        with open(path, "w") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")
    if stale:
        raise SystemExit("stale mcu_heap_bytes in: %s" % ", ".join(stale))


if __name__ == "__main__":
    main()
