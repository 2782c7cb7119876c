"""Writes (or checks) manifest.json and vectors.json for models/NAME/ without TensorFlow.

    python tools/models/make_vectors.py models/digits_dense models/digits_conv
    python tools/models/make_vectors.py --check models/*/

Needs numpy, tflite-micro (the bit-exact int8 reference) and one of ai-edge-litert or
tflite-runtime. The model directory must hold model.tflite, samples.bin (the held-out inputs,
int8, concatenated) and labels.bin (their true classes, uint8). Operator names and the arena
size come from the project's own MCU engine (firmware/engine), so the manifest states what a
board will need.
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from firmware.engine import model as engine_model  # noqa: E402
from edgefleet.controller import modelcheck  # noqa: E402



def input_quantization(model_bytes):
    m = engine_model.Model(model_bytes)
    return m.tensors[m.inputs[0]].quant()


# The manifest and vectors are computed by the module `edgefleet model add` uses
# (controller/modelcheck.py: build_manifest), so a bundled model and a user's are checked the same way.


def compute(model_dir, name=None, labels=None, description=None):
    """(manifest, vectors) for the model in model_dir."""
    old = {}
    manifest_path = os.path.join(model_dir, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            old = json.load(f)
    name = name or old.get("name") or os.path.basename(os.path.normpath(model_dir))
    labels = labels or old.get("labels")
    description = description or old.get("description", "")

    with open(os.path.join(model_dir, "model.tflite"), "rb") as f:
        model_bytes = f.read()
    table = modelcheck.op_table(model_bytes, model_dir)
    if not modelcheck.runs_on(table, modelcheck.MCU):
        # A bundled model must run on every board kind; a Pi-only one is for `edgefleet model add --pi-only`.
        raise SystemExit("%s: the MCU engine cannot run %s" % (model_dir, "; ".join(
            "%s (op %d: %s)" % (r["name"], r["index"], r["micropython"]) for r in table["ops"] if r["micropython"])
            or table["mcu_error"]))
    m = engine_model.Model(model_bytes)
    sample_bytes = m.tensors[m.inputs[0]].nbytes
    samples = np.fromfile(os.path.join(model_dir, "samples.bin"), dtype=np.int8).reshape(-1, sample_bytes)
    truth = np.fromfile(os.path.join(model_dir, "labels.bin"), dtype=np.uint8)
    if len(truth) != len(samples):
        raise SystemExit("%s: %d samples but %d labels" % (model_dir, len(samples), len(truth)))
    # The heap figures are measure_mcu_heap.py's to write; a rebuild of the vectors keeps them.
    manifest, vectors, mismatches = modelcheck.build_manifest(model_bytes, samples, truth, name, labels, description,
                                                              mcu_heap_bytes=old.get("mcu_heap_bytes"),
                                                              mcu_rom_heap_bytes=old.get("mcu_rom_heap_bytes"))
    if "word_32" in old:
        manifest["word_32"] = old["word_32"]
    if mismatches:
        raise SystemExit("%s: the MCU engine differs from TFLite Micro on %d samples" % (model_dir, mismatches))
    return manifest, vectors


def _dump(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def build(model_dir, name=None, labels=None, description=None):
    manifest, vectors = compute(model_dir, name, labels, description)
    _dump(manifest, os.path.join(model_dir, "manifest.json"))
    _dump(vectors, os.path.join(model_dir, "vectors.json"))
    return manifest


def check(model_dir):
    """List of differences between the committed files and a fresh computation."""
    manifest, vectors = compute(model_dir)
    problems = []
    with open(os.path.join(model_dir, "manifest.json")) as f:
        old_manifest = json.load(f)
    with open(os.path.join(model_dir, "vectors.json")) as f:
        old_vectors = json.load(f)
    for key in ("sha256", "flash_bytes", "inputs", "outputs", "ops", "arena_bytes", "accuracy", "samples"):
        if old_manifest.get(key) != manifest[key]:
            problems.append("manifest %s: committed %r, computed %r" % (key, old_manifest.get(key), manifest[key]))
    if old_vectors["vectors"] != vectors["vectors"]:
        problems.append("vectors.json differs from tflite-micro's outputs")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dirs", nargs="+")
    parser.add_argument("--check", action="store_true", help="verify instead of writing")
    args = parser.parse_args(argv)
    failed = False
    for d in args.model_dirs:
        if args.check:
            problems = check(d)
            for p in problems:
                print("%s: %s" % (d, p))
            failed = failed or bool(problems)
            if not problems:
                print("%s: ok" % d)
        else:
            m = build(d)
            print("%s: wrote manifest.json and vectors.json (arena %d, accuracy %s)" % (d, m["arena_bytes"], m["accuracy"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
