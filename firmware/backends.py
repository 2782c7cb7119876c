# Inference backends a node can run a .tflite model with, best first:
#   litert  ai-edge-litert's interpreter (Linux boards)
#   tflite  tflite-runtime's interpreter (Linux boards; needs numpy<2)
#   engine  edgefleet's own int8 engine (every board; the only one on MicroPython)
# Every backend exposes the same small model interface: input_size, input_shape (its
# dimensions, batch first), input_quant, output_quant, and
# invoke(int8 input buffer) -> sequence of int8 outputs.
#
# `runtime` is the node's, from its board profile ("micropython" or "cpython"); host tools and
# the Linux inference child run CPython, the default.
from .errors import FirmwareError


class BackendError(FirmwareError):
    pass


def available(runtime="cpython"):
    names = []
    if runtime != "micropython":
        from .tflite_backend import interpreter_class
        for name in ("litert", "tflite"):
            if interpreter_class(name) is not None:
                names.append(name)
    names.append("engine")
    return names


class EngineModel:
    """A model run by the project's own int8 engine (firmware/engine)."""

    def __init__(self, path, arena_budget=None):
        from .engine import load
        self._interp = load(path, arena_budget=arena_budget)
        self.input_size = self._interp.input_size
        self.output_size = self._interp.output_size
        self.input_quant = self._interp.input_quant
        self.input_shape = self._interp.input_shape
        self.output_quant = self._interp.output_quant
        self.arena_bytes = self._interp.arena_bytes

    def invoke(self, data):
        return self._interp.invoke(data)

    def invoke_batch(self, payload, count, clock_ns):
        in_size, out_size = self.input_size, self.output_size
        outputs = bytearray(count * out_size)
        latencies = [0] * count
        view = memoryview(payload)
        for i in range(count):
            t0 = clock_ns()
            out = self._interp.invoke(view[i * in_size:(i + 1) * in_size])
            outputs[i * out_size:(i + 1) * out_size] = out
            latencies[i] = (clock_ns() - t0) // 1000
        return bytes(outputs), latencies


def open_model(path, backend=None, arena_budget=None, num_threads=1, runtime="cpython"):
    """Load a .tflite with the named backend, or the best one available."""
    name = backend or available(runtime)[0]
    if name == "engine":
        return name, EngineModel(path, arena_budget)
    if runtime == "micropython":
        raise BackendError("inference backend %r does not run on MicroPython" % name)
    from .tflite_backend import InterpreterModel, interpreter_class
    cls = interpreter_class(name)
    if cls is None:
        raise BackendError("inference backend %r is not installed on this node" % name)
    return name, InterpreterModel(cls, path, num_threads)


def top1(outputs, quant):
    """Index of the largest int8 output and its dequantized value.

    outputs may hold signed ints or, from a bytearray arena, int8 values as unsigned bytes.
    """
    best, best_value = 0, -129
    for i in range(len(outputs)):
        value = outputs[i]
        if value > 127:
            value -= 256
        if value > best_value:
            best, best_value = i, value
    scale, zero_point = quant[0], quant[1]
    return best, (best_value - zero_point) * scale
