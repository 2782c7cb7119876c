#!/usr/bin/env python3
"""Records in each bundled model's manifest the heap a MicroPython node needs to run it:
`mcu_heap_bytes`: the smallest -X heapsize from which the engine (from .mpy, as on a board)
reliably imports, loads the model and runs an inference, and `mcu_rom_heap_bytes`: the same with
the engine's code and the model read in place from a ROMFS image (the image's bytes left out) (edgefleet.controller.modelcheck.min_heap,
which `edgefleet model add` uses for a user's model), plus MARGIN. The controller places a model
on an MCU only where this fits beside the runtime's own budget (controller/fleet/placement.py),
so the record must never be below what a board needs.

    python tools/models/measure_mcu_heap.py [--check] [NAME ...]

The figures are those of the MicroPython that simulated boards run (controller/extras.py): the
venv's 64-bit one writes the manifest's top-level keys; a 32-bit build, a board's own word size
($EDGEFLEET_MICROPYTHON, tools/micropython32/build.sh), writes them under "word_32", which
placement reads for nodes that say they are 32-bit.

Models are measured one at a time (NAME ..., default every bundled model) and only the measured
model's manifest is rewritten. A model the engine cannot run is reported with the engine's own
reason (which names the op), and the others are still measured.
--check re-measures and fails if a manifest is below the measured need, or so far above it
(more than MARGIN + TOLERANCE) that placement would turn away boards that can run the model.
"""
import argparse
import json
import os
import tempfile

from edgefleet import models
from edgefleet.controller import modelcheck
from edgefleet.controller.extras import micropython_build, require_micropython

MARGIN = modelcheck.HEAP_MARGIN
TOLERANCE = 4096


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("names", nargs="*", help="bundled models to measure (default: all)")
    args = parser.parse_args()
    names = args.names or models.bundled_names()
    word = micropython_build(require_micropython("measuring a model's MicroPython heap"))[1]
    failed = []
    with tempfile.TemporaryDirectory() as scratch:
        image = modelcheck.compile_engine(os.path.join(scratch, "image"))
        for name in names:
            path = os.path.join(models.MODELS_DIR, name, "manifest.json")
            with open(path) as f:
                manifest = json.load(f)
            model = os.path.join(models.MODELS_DIR, name, "model.tflite")
            rom = modelcheck.engine_rom_image(image, model)   # the engine and this model, in place
            try:
                needs = {"mcu_heap_bytes": modelcheck.min_heap(image, model),
                         "mcu_rom_heap_bytes": modelcheck.min_heap(image, model, rom_image=rom)}
            except modelcheck.CannotRun as e:
                print("%s: cannot run under MicroPython: %s" % (name, e.reason))
                failed.append(name)
                continue
            record = modelcheck.heap_record(manifest, word)
            for key, need in needs.items():
                recorded = record.get(key)
                print("%s: needs %s bytes of MicroPython heap with the engine %s (manifest %s: %s)"
                      % (name, need, "in ROM" if "rom" in key else "as files", key, recorded))
                if args.check and (recorded is None or not need <= recorded <= need + MARGIN + TOLERANCE):
                    print("%s: stale %s" % (name, key))
                    failed.append(name)
            if args.check:
                continue
            for key, need in needs.items():
                record[key] = need + MARGIN
            with open(path, "w") as f:
                json.dump(manifest, f, indent=1)
                f.write("\n")
    if failed:
        raise SystemExit("failed: %s" % ", ".join(failed))


if __name__ == "__main__":
    main()
