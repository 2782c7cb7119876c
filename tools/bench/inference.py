#!/usr/bin/env python3
"""Inference benchmark: the MCU engine against TensorFlow Lite Micro, and the Pi-class isolated
worker against a raw interpreter loop, side by side in one run.

For each model in models/:
  - the edgefleet engine under the real MicroPython interpreter at the smallest MCU board heap,
    loaded from .mpy as a board loads it, with viper kernels and with pure-Python kernels:
    bit-exactness on every test vector, us per inference, bytes allocated per inference in
    steady state, heap in use (engine + model + arena);
  - tflite-micro (PyPI) on this host: us per inference; ratio = engine viper / TFLM.
Then the Pi-class worker (its own process, batched) versus a raw interpreter invoke() loop
on the same model and backend: throughput ratio and the RSS the isolation adds.

Per op ("ops"): each converter-made op model of tests/data/ops/ (tools/models/make_op_models.py)
the same way, engine with viper kernels at the MCU heap against TFLM on random inputs. An op
model holds the op plus what feeds it (a CONV_2D, a MUL...), so its figure is that small
model's; "model" says which.

The sensor input's preprocessing (firmware/source_sensor.py) on the MCU, under the same
interpreter and heap: "sensor_window_us" per window of 32 readings (each scaled, quantised and
ringed, the window copied out), "sensor_alloc_bytes" the heap allocated per window in steady
state (the target is 0).

The last line printed is the JSON summary.
"""
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from edgefleet import models
from edgefleet.boards import catalog
from edgefleet.controller.extras import micropython_binary
from edgefleet.controller.install import image
from edgefleet.firmware import backends
from edgefleet.firmware.procworker import ProcessModel

HERE = os.path.dirname(os.path.abspath(__file__))
MPY_ITERATIONS = {"viper": 500, "pure": 50}
REPO = os.path.dirname(os.path.dirname(HERE))
OPS_DIR = os.path.join(REPO, "tests", "data", "ops")
# op -> the op model that measures it
OP_MODELS = {"ADD": "add", "SUB": "sub", "MUL": "mul", "CONCATENATION": "concatenation", "PAD": "pad",
             "MEAN": "mean", "EXPAND_DIMS": "squeeze_expand", "SQUEEZE": "squeeze", "LEAKY_RELU": "leaky_relu",
             "LOGISTIC": "logistic", "TANH": "tanh", "HARD_SWISH": "hard_swish", "QUANTIZE": "float_io",
             "DEQUANTIZE": "float_io", "SHAPE+STRIDED_SLICE+PACK (folded)": "keras_default"}
OP_VECTORS = 20
HOST_SECONDS = 2.0
PI_ROUNDS = 5


def smallest_mcu_heap():
    return min(p["heap_bytes"] for p in catalog.all_profiles() if p["runtime"] == "micropython")


def write_vector_records(model_dir, dest):
    """The model's test vectors as raw int8 records (input bytes, then reference output bytes)."""
    with open(os.path.join(model_dir, "vectors.json")) as f:
        vectors = json.load(f)["vectors"]
    with open(dest, "wb") as f:
        for case in vectors:
            f.write(np.array(case["input"], dtype=np.int8).tobytes())
            f.write(np.array(case["output"], dtype=np.int8).tobytes())
    return dest


def run_engine_probe(image_dir, model_dir, kernels, heap):
    env = dict(os.environ, MICROPYPATH=image_dir + ":.frozen")
    records = write_vector_records(model_dir, os.path.join(image_dir, "vectors.bin"))
    proc = subprocess.run([micropython_binary(), "-X", "heapsize=%d" % heap, os.path.join(HERE, "engine_probe.py"),
                           os.path.join(model_dir, "model.tflite"), records, kernels, str(MPY_ITERATIONS[kernels])],
                          capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]}
    return json.loads(lines[-1])


def time_tflm(model_dir):
    from tflite_micro.python.tflite_micro import runtime
    with open(os.path.join(model_dir, "vectors.json")) as f:
        vectors = json.load(f)["vectors"]
    interp = runtime.Interpreter.from_file(os.path.join(model_dir, "model.tflite"))
    x = np.array(vectors[0]["input"], dtype=np.int8).reshape(interp.get_input_details(0)["shape"])
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < HOST_SECONDS:
        interp.set_input(x, 0)
        interp.invoke()
        interp.get_output(0)
        count += 1
    return (time.perf_counter() - t0) / count * 1e6


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


RAW_LOOP = """
import sys, time, numpy as np
from edgefleet.firmware.tflite_backend import interpreter_class
cls = interpreter_class(sys.argv[2])
interp = cls(model_path=sys.argv[1], num_threads=1)
interp.allocate_tensors()
inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
x = np.zeros(inp["shape"], dtype=inp["dtype"])
count, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < float(sys.argv[3]):
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    interp.get_tensor(out["index"])
    count += 1
rate = count / (time.perf_counter() - t0)
rss = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:")][0]
print(rate, rss)
"""


def raw_interpreter_loop(model_path, backend):
    """Inferences per second and RSS of a bare process running the interpreter's own loop."""
    proc = subprocess.run([sys.executable, "-c", RAW_LOOP, model_path, backend, str(HOST_SECONDS)],
                          capture_output=True, text=True, timeout=120)
    rate, rss = proc.stdout.split()
    return float(rate), int(rss)


def agent_rss_bytes():
    """RSS of a process holding the node agent's code: what a Pi-class node pays besides its
    workers (the agent imports no interpreter and no numpy)."""
    code = ("import edgefleet.firmware.node, edgefleet.firmware.procworker, edgefleet.boards.hal_linux;"
            "print([int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmRSS:')][0])")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout)


async def isolated_worker_rate(model_path, backend, batch=256, in_flight=2):
    """Inferences per second through the isolated worker process, kept saturated: full batches,
    the next one submitted before the previous one's results are read."""
    model = await ProcessModel(model_path, backend, num_threads=1).start()
    try:
        payload = bytes(model.input_size * batch)
        await model.invoke_batch(payload, batch)
        count, t0 = 0, time.perf_counter()
        for _ in range(in_flight):
            await model.submit(payload, batch)
        while time.perf_counter() - t0 < HOST_SECONDS:
            await model.collect()
            count += batch
            await model.submit(payload, batch)
        for _ in range(in_flight):
            await model.collect()
            count += batch
        rate = count / (time.perf_counter() - t0)
        return rate, rss_bytes(model.pid)
    finally:
        await model.close()


def op_figures(image_dir, heap):
    """{op: {"bit_exact", "mpy_us", "tflm_us", "ratio_vs_tflm", "model"}} for the op models."""
    from tflite_micro.python.tflite_micro import runtime
    figures, measured = {}, {}
    for op, name in OP_MODELS.items():
        if name not in measured:
            path = os.path.join(OPS_DIR, name + ".tflite")
            tflm = runtime.Interpreter.from_file(path)
            details = tflm.get_input_details(0)
            rng = np.random.default_rng(7)
            records = os.path.join(image_dir, name + ".bin")
            with open(records, "wb") as f:
                for _ in range(OP_VECTORS):
                    if details["dtype"] == np.float32:
                        x = rng.normal(0, 2, size=details["shape"]).astype(np.float32)
                    else:
                        x = rng.integers(-128, 128, size=details["shape"]).astype(np.int8)
                    tflm.set_input(x, 0)
                    tflm.invoke()
                    f.write(x.tobytes() + np.array(tflm.get_output(0)).tobytes())
            env = dict(os.environ, MICROPYPATH=image_dir + ":.frozen")
            proc = subprocess.run([micropython_binary(), "-X", "heapsize=%d" % heap,
                                   os.path.join(HERE, "engine_probe.py"), path, records, "viper",
                                   str(MPY_ITERATIONS["viper"] // 5)],
                                  capture_output=True, text=True, env=env, timeout=300)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            probe = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
            count, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < HOST_SECONDS / 4:
                tflm.set_input(x, 0)
                tflm.invoke()
                tflm.get_output(0)
                count += 1
            tflm_us = (time.perf_counter() - t0) / count * 1e6
            measured[name] = {
                "bit_exact": bool(probe) and probe["exact"] == probe["vectors"] == OP_VECTORS,
                "mpy_us": round(probe["us"], 1) if probe else None,
                "tflm_us": round(tflm_us, 1),
                "ratio_vs_tflm": round(probe["us"] / tflm_us, 1) if probe else None,
                "model": name,
            }
            if not probe:
                measured[name]["error"] = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
            print("op model %s: %s" % (name, json.dumps(measured[name])), file=sys.stderr)
        figures[op] = measured[name]
    return figures


def sensor_figures(image_dir, heap, window=32, windows=2000):
    env = dict(os.environ, MICROPYPATH=image_dir + ":.frozen")
    proc = subprocess.run([micropython_binary(), "-X", "heapsize=%d" % heap, os.path.join(HERE, "sensor_probe.py"),
                           str(window), str(window), str(windows)], capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        print("sensor probe failed: %s" % (proc.stdout + proc.stderr).strip(), file=sys.stderr)
        return {"sensor_window_us": None, "sensor_alloc_bytes": None}
    probe = json.loads(lines[-1])
    print("sensor: %s" % lines[-1], file=sys.stderr)
    return {"sensor_window_us": round(probe["us"], 1), "sensor_alloc_bytes": probe["alloc_bytes"]}


def main():
    heap = smallest_mcu_heap()
    report = {"models": [], "mcu_heap": heap}
    with tempfile.TemporaryDirectory() as image_dir:
        image.write_mpy_tree(image_dir, image.firmware_files())
        for name in models.names():
            model_dir = os.path.join(models.MODELS_DIR, name)
            viper = run_engine_probe(image_dir, model_dir, "viper", heap)
            pure = run_engine_probe(image_dir, model_dir, "pure", heap)
            tflm_us = time_tflm(model_dir)
            print("%s viper: %s" % (name, json.dumps(viper)), file=sys.stderr)
            print("%s pure: %s" % (name, json.dumps(pure)), file=sys.stderr)
            ok = "error" not in viper and "error" not in pure
            report["models"].append({
                "name": name,
                "bit_exact": ok and viper["exact"] == viper["vectors"] and pure["exact"] == pure["vectors"],
                "mpy_us": round(viper["us"], 1) if ok else None,
                "mpy_pure_us": round(pure["us"], 1) if ok else None,
                "tflm_us": round(tflm_us, 1),
                "ratio_vs_tflm": round(viper["us"] / tflm_us, 2) if ok else None,
                "steady_alloc_bytes": max(viper["steady_alloc_bytes"], pure["steady_alloc_bytes"]) if ok else None,
                "peak_heap_bytes": max(viper["heap_in_use_bytes"], pure["heap_in_use_bytes"]) if ok else None,
                "arena_bytes": viper.get("arena_bytes"),
                "error": None if ok else viper.get("error") or pure.get("error"),
            })
        report["ops"] = op_figures(image_dir, heap)
        report.update(sensor_figures(image_dir, heap))
    backend = backends.available()[0]
    ratios, overheads = [], []
    for name in models.names():
        path = os.path.join(models.MODELS_DIR, name, "model.tflite")
        # Alternate the two, several rounds, and keep the median: on a 2-core machine a
        # single pair of runs is at the mercy of whatever else is running.
        pair_ratios = []
        for _ in range(PI_ROUNDS):
            raw_rate, raw_rss = raw_interpreter_loop(path, backend)
            worker_rate, worker_rss = asyncio.run(isolated_worker_rate(path, backend))
            pair_ratios.append(worker_rate / raw_rate)
            print("%s %s: raw loop %.0f/s (%.1f MB), isolated worker %.0f/s (%.1f MB)" % (
                name, backend, raw_rate, raw_rss / 2**20, worker_rate, worker_rss / 2**20), file=sys.stderr)
        ratios.append(sorted(pair_ratios)[len(pair_ratios) // 2])
        overheads.append((worker_rss - raw_rss) / 2**20)
    report["pi_backend"] = backend
    report["pi_agent_rss_mb"] = round(agent_rss_bytes() / 2**20, 1)
    report["pi_worker_ratio"] = round(min(ratios), 3)
    report["pi_worker_rss_overhead_mb"] = round(max(overheads), 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
