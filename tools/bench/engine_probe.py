# Runs ON the MicroPython board (the unix port in the benchmark): loads a model with the
# edgefleet engine, checks every test vector, times inferences and measures heap.
# Usage: micropython engine_probe.py MODEL VECTORS.bin KERNELS ITERATIONS  -> one JSON line
import gc
import json
import sys
import time

import micropython

gc.collect()
heap_base = gc.mem_alloc()
from firmware.engine import load  # noqa: E402


def main(model_path, vectors_path, kernels, iterations):
    gc.collect()
    before_load = gc.mem_alloc()
    interp = load(model_path, kernels=kernels)
    gc.collect()
    model_bytes = gc.mem_alloc() - before_load
    # Vectors come as raw int8 records (input then reference output), one at a time, so the
    # check itself costs the board's heap only one record.
    record = bytearray(interp.input_size + interp.output_size)
    x = memoryview(record)[:interp.input_size]
    expected = memoryview(record)[interp.input_size:]
    vectors = exact = 0
    with open(vectors_path, "rb") as f:
        while f.readinto(record) == len(record):
            vectors += 1
            if interp.invoke(x) == expected:
                exact += 1
    interp.invoke(x)
    gc.collect()
    alloc_before = gc.mem_alloc()
    t0 = time.ticks_us()
    for _ in range(iterations):
        interp.invoke(x)
    elapsed = time.ticks_diff(time.ticks_us(), t0)
    steady_alloc = max(0, gc.mem_alloc() - alloc_before) // iterations
    # The strict check: with the heap locked, any allocation inside invoke() raises.
    micropython.heap_lock()
    try:
        interp.invoke(x)
        heap_locked_ok = True
    except MemoryError:
        heap_locked_ok = False
    micropython.heap_unlock()
    if not heap_locked_ok and steady_alloc == 0:
        steady_alloc = 1  # allocates, though too little to see in the counter
    in_use = gc.mem_alloc() - heap_base
    print(json.dumps({"kernels": interp.kernels, "vectors": vectors, "exact": exact, "us": elapsed / iterations,
                      "steady_alloc_bytes": steady_alloc, "heap_in_use_bytes": in_use, "model_bytes": model_bytes,
                      "arena_bytes": interp.arena_bytes, "heap_total": gc.mem_alloc() + gc.mem_free()}))


main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
