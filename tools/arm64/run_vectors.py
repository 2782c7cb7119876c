"""Run a model's test vectors through one inference backend; print the outputs as JSON.

The same file runs on both sides of the ARMv8 parity check (tests/test_arm64.py): as a script
under the emulated aarch64 interpreter, imported by the x86 test process. Output:
{"backend", "machine", "outputs": [[int8, ...] per vector], "us_per_inference"}.

    python3.11 tools/arm64/run_vectors.py MODEL_DIR BACKEND [TIMING_ROUNDS]
"""
import json
import os
import platform
import sys
import time

from edgefleet.firmware.backends import open_model


def run_vectors(model_dir, backend, timing_rounds=20):
    with open(os.path.join(model_dir, "vectors.json")) as f:
        vectors = json.load(f)["vectors"]
    name, model = open_model(os.path.join(model_dir, "model.tflite"), backend)
    # int8 inputs travel as the bytes a node hands its model.
    inputs = [bytes(v & 0xFF for v in vector["input"]) for vector in vectors]
    outputs = [[int(x) for x in model.invoke(data)] for data in inputs]
    started = time.perf_counter()
    for _ in range(timing_rounds):
        for data in inputs:
            model.invoke(data)
    elapsed = time.perf_counter() - started
    return {
        "backend": name, "machine": platform.machine(), "outputs": outputs,
        "us_per_inference": round(1e6 * elapsed / max(1, timing_rounds * len(inputs)), 1),
    }


if __name__ == "__main__":
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    print(json.dumps(run_vectors(sys.argv[1], sys.argv[2], rounds)))
