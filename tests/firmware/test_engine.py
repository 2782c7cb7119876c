# The MCU int8 engine, checked under CPython and MicroPython against tflite-micro's outputs
# recorded in models/*/vectors.json, and its refusals of bad or oversized models.
import gc
import json
import sys

from firmware.engine import load, arena_bytes_for, MalformedModel, UnsupportedOp, ModelTooLarge, EngineError
from firmware.errors import FirmwareError
from paths import repo_path
import unit
from unit import raises

MODELS = ("digits_dense", "digits_conv")
ON_MICROPYTHON = sys.implementation.name == "micropython"


def _skip(reason):
    # pytest also collects this module directly, and then only pytest.skip() reports a skip.
    if "pytest" in sys.modules:
        import pytest
        pytest.skip(reason)
    raise unit.Skip(reason)


def _model_path(name):
    # Each test loads models afresh; collecting first keeps the previous test's garbage from
    # fragmenting the small MicroPython heap the runner gives.
    gc.collect()
    return repo_path("models", name, "model.tflite")


def _json(name, what):
    with open(repo_path("models", name, what)) as f:
        return json.load(f)


def _as_bytes(values):
    return bytes([v & 0xFF for v in values])


def _check_vectors(name, kernels):
    gc.collect()
    interp = load(_model_path(name), kernels=kernels)
    vectors = _json(name, "vectors.json")["vectors"]
    if len(vectors) < 10:
        raise AssertionError("%s has only %d vectors" % (name, len(vectors)))
    for vec in vectors:
        out = interp.invoke(_as_bytes(vec["input"]))
        got = [(v ^ 0x80) - 0x80 for v in out]
        if got != vec["output"]:
            raise AssertionError("%s (%s kernels) sample %d: engine %s, tflite-micro %s" % (
                name, interp.kernels, vec["sample"], got, vec["output"]))
        if interp.output_int8() != got:
            raise AssertionError("output_int8() disagrees with the returned view")


def test_dense_vectors_bit_exact_pure():
    _check_vectors("digits_dense", "pure")


def test_conv_vectors_bit_exact_pure():
    _check_vectors("digits_conv", "pure")


def _need_viper():
    if not ON_MICROPYTHON:
        _skip("viper kernels exist only on MicroPython")


def test_dense_vectors_bit_exact_viper():
    _need_viper()
    _check_vectors("digits_dense", "viper")


def test_conv_vectors_bit_exact_viper():
    _need_viper()
    _check_vectors("digits_conv", "viper")


def test_default_kernels_are_fastest_available():
    interp = load(_model_path("digits_dense"))
    expected = "viper" if ON_MICROPYTHON else "pure"
    if interp.kernels != expected:
        raise AssertionError("default kernels %r, expected %r" % (interp.kernels, expected))
    if not ON_MICROPYTHON:
        e = raises(EngineError, load, _model_path("digits_dense"), kernels="viper")
        if not isinstance(e, FirmwareError):
            raise AssertionError("EngineError must be a FirmwareError")


def test_held_out_accuracy_matches_manifest():
    # The engine classifies the whole held-out stream as tflite-micro did (same argmax count).
    for name in MODELS:
        manifest = _json(name, "manifest.json")
        interp = load(_model_path(name))
        sample = bytearray(manifest["samples"]["sample_bytes"])
        with open(repo_path("models", name, "labels.bin"), "rb") as f:
            labels = f.read()
        correct = 0
        # Streamed one sample at a time, as a node reads it, so a small heap suffices.
        samples = open(repo_path("models", name, "samples.bin"), "rb")
        for i in range(len(labels)):
            if samples.readinto(sample) != len(sample):
                raise AssertionError("%s: samples.bin ends at sample %d" % (name, i))
            out = interp.invoke(sample)
            best, best_value = 0, -129
            for j in range(len(out)):
                v = (out[j] ^ 0x80) - 0x80
                if v > best_value:
                    best, best_value = j, v
            if best == labels[i]:
                correct += 1
        samples.close()
        interp = None
        gc.collect()
        accuracy = round(correct / len(labels), 4)
        if accuracy != manifest["accuracy"]["tflite_micro"]:
            raise AssertionError("%s: engine accuracy %s, tflite-micro %s" % (
                name, accuracy, manifest["accuracy"]["tflite_micro"]))


def test_metadata_matches_manifest():
    for name in MODELS:
        gc.collect()
        manifest = _json(name, "manifest.json")
        planned = arena_bytes_for(_model_path(name))
        gc.collect()
        interp = load(_model_path(name))
        if interp.arena_bytes != manifest["arena_bytes"] or planned != interp.arena_bytes:
            raise AssertionError("%s: arena %d, planning-only %d, manifest %d" % (
                name, interp.arena_bytes, planned, manifest["arena_bytes"]))
        inp, out = manifest["inputs"][0], manifest["outputs"][0]
        if interp.input_size != manifest["samples"]["sample_bytes"] or interp.output_size != len(manifest["labels"]):
            raise AssertionError("%s: sizes %d/%d" % (name, interp.input_size, interp.output_size))
        for got, want in ((interp.input_quant, inp), (interp.output_quant, out)):
            if got[1] != want["zero_point"] or abs(got[0] - want["scale"]) > 1e-6 * want["scale"]:
                raise AssertionError("%s: quantization %s, manifest %s" % (name, got, want))
        interp = None


def test_invoke_reuses_its_output_buffer():
    interp = load(_model_path("digits_dense"))
    data = _as_bytes(_json("digits_dense", "vectors.json")["vectors"][0]["input"])
    first = interp.invoke(data)
    second = interp.invoke(data)
    if first is not second:
        raise AssertionError("invoke() allocated a new output buffer")


def test_wrong_input_size_is_refused():
    interp = load(_model_path("digits_dense"))
    raises(EngineError, interp.invoke, bytes(interp.input_size - 1))


def test_truncated_model_raises_malformed_with_offset():
    with open(_model_path("digits_dense"), "rb") as f:
        data = f.read()
    for length in (0, 3, 7, 8, 40, 200, len(data) // 2, len(data) - 16, len(data) - 1):
        e = raises(MalformedModel, load, data[:length])
        if not isinstance(e.offset, int) or not 0 <= e.offset <= len(data):
            raise AssertionError("truncated to %d: offset %r" % (length, e.offset))
        if not isinstance(e, EngineError) or not isinstance(e, FirmwareError):
            raise AssertionError("MalformedModel must be an EngineError and a FirmwareError")


def test_bad_file_identifier_names_its_offset():
    with open(_model_path("digits_dense"), "rb") as f:
        data = bytearray(f.read())
    data[4:8] = b"XXXX"
    e = raises(MalformedModel, load, bytes(data))
    if e.offset != 4:
        raise AssertionError("offset %r, expected 4" % e.offset)


def test_corrupt_offset_is_malformed():
    with open(_model_path("digits_conv"), "rb") as f:
        data = bytearray(f.read())
    data[0:4] = b"\xff\xff\xff\x7f"  # root table offset far past the end
    e = raises(MalformedModel, load, bytes(data))
    if e.offset != 0:
        raise AssertionError("offset %r, expected 0" % e.offset)


def test_unsupported_op_is_named():
    path = repo_path("tests", "vectors", "models", "unsupported_op.tflite")
    e = raises(UnsupportedOp, load, path)
    if e.op_name != "GELU" or e.op_code != 150 or not isinstance(e.op_index, int):
        raise AssertionError("UnsupportedOp names %r (code %r) at %r" % (e.op_name, e.op_code, e.op_index))
    if "GELU" not in str(e):
        raise AssertionError("message does not name the op: %s" % e)
    # Planning alone does not need kernels, so the controller can still size such a model.
    if arena_bytes_for(path) <= 0:
        raise AssertionError("planning failed")


def test_budget_too_small_raises_model_too_large():
    for name in MODELS:
        needed = arena_bytes_for(_model_path(name))
        e = raises(ModelTooLarge, load, _model_path(name), arena_budget=needed - 1)
        if e.needed != needed or e.budget != needed - 1:
            raise AssertionError("ModelTooLarge(%r, %r), expected (%d, %d)" % (e.needed, e.budget, needed, needed - 1))
        if load(_model_path(name), arena_budget=needed).arena_bytes != needed:
            raise AssertionError("an exact budget must be accepted")


def test_engine_heap_for_dense_model():
    if not ON_MICROPYTHON:
        _skip("heap accounting is MicroPython's gc")
    # A first load interns the loader's strings for good; what a model holds is measured after.
    load(_model_path("digits_dense"))
    gc.collect()
    before = gc.mem_alloc()
    interp = load(_model_path("digits_dense"))
    data = _as_bytes(_json("digits_dense", "vectors.json")["vectors"][0]["input"])
    gc.collect()
    loaded = gc.mem_alloc() - before - len(data)
    # The arena, the accumulators and the filters (2.6 KB in one block) and the prepared steps;
    # not the model file, which is read in place.
    if loaded > 6 * 1024:
        raise AssertionError("loading the dense model holds %d bytes of heap" % loaded)
    for kernels in ("pure", "viper"):
        interp = load(_model_path("digits_dense"), kernels=kernels)
        interp.invoke(data)
        gc.collect()
        start = gc.mem_alloc()
        for _ in range(5):
            interp.invoke(data)
        allocated = gc.mem_alloc() - start
        # With 64-bit words every intermediate is a small int, so steady-state inference
        # allocates nothing; 32-bit ports box the int32 x Q31 products as long ints.
        if sys.maxsize > (1 << 32) and allocated:
            raise AssertionError("5 inferences (%s) allocated %d bytes" % (kernels, allocated))


def test_load_lets_the_loader_go():
    # The load-time code is most of the engine; a board keeps it only while a model loads.
    if not ON_MICROPYTHON:
        _skip("CPython keeps its modules")
    load(_model_path("digits_dense"))
    raises(MalformedModel, load, b"short")
    if [name for name in sys.modules if name.endswith("engine.loader")]:
        raise AssertionError("the loader is still imported")



def test_invoke_allocates_nothing_even_transiently():
    # With the heap locked any allocation raises, including one freed again at once (as a
    # f(*args) call's argument array is): inference must run from preallocated memory only.
    if not ON_MICROPYTHON:
        _skip("heap locking is MicroPython's")
    import micropython
    for name in MODELS:
        for kernels in ("viper", "pure"):
            interp = load(_model_path(name), kernels=kernels)
            data = bytearray(interp.input_size)
            interp.invoke(data)
            micropython.heap_lock()
            try:
                interp.invoke(data)
            except MemoryError:
                micropython.heap_unlock()
                raise AssertionError("%s (%s kernels) allocates during invoke()" % (name, kernels))
            micropython.heap_unlock()
            interp = None
