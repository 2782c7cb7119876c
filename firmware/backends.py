# Inference backends a node can run a .tflite model with, best first:
#   litert  ai-edge-litert's interpreter (Linux boards)
#   tflite  tflite-runtime's interpreter (Linux boards; needs numpy<2)
#   engine  edgefleet's own int8 engine (every board; the only one on MicroPython)
# Every backend exposes the same small model interface: input_size, output_quant, and
# invoke(int8 input buffer) -> sequence of int8 outputs.
import sys

from .errors import FirmwareError


class BackendError(FirmwareError):
    pass


def _interpreter_class(name):
    try:
        if name == "litert":
            from ai_edge_litert.interpreter import Interpreter
            return Interpreter
        if name == "tflite":
            from tflite_runtime.interpreter import Interpreter
            return Interpreter
    except ImportError:
        return None
    return None


def available():
    names = []
    if sys.implementation.name != "micropython":
        for name in ("litert", "tflite"):
            if _interpreter_class(name) is not None:
                names.append(name)
    names.append("engine")
    return names


class InterpreterModel:
    """A model run by a TensorFlow Lite interpreter (LiteRT or tflite-runtime)."""

    def __init__(self, interpreter_class, path, num_threads=1):
        import numpy
        self._np = numpy
        try:
            self._interp = interpreter_class(model_path=path, num_threads=num_threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise BackendError("cannot load %s: %s" % (path, e))
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_shape, self._in_dtype = inp["shape"], inp["dtype"]
        self.input_size = int(numpy.prod(self._in_shape))
        self.output_size = int(numpy.prod(out["shape"]))
        self.input_quant = tuple(inp["quantization"])
        self.output_quant = tuple(out["quantization"])

    def invoke(self, data):
        arr = self._np.frombuffer(bytes(data), dtype=self._in_dtype).reshape(self._in_shape)
        self._interp.set_tensor(self._in_index, arr)
        self._interp.invoke()
        return self._interp.get_tensor(self._out_index).reshape(-1).tolist()

    def invoke_batch(self, payload, count, clock_ns):
        """Run `count` inputs packed back to back; returns (raw int8 outputs, us per inference).

        The loop body is exactly an interpreter's own set_tensor/invoke/get_tensor cycle; time
        is taken per batch, because two clock reads per inference would cost more than a small
        model's whole invoke().
        """
        np = self._np
        # An owned copy: set_tensor takes a slow path for views of read-only memory.
        inputs = np.frombuffer(payload, dtype=self._in_dtype).reshape((count,) + tuple(self._in_shape)).copy()
        interp, in_index, out_index = self._interp, self._in_index, self._out_index
        outputs = []
        t0 = clock_ns()
        for x in inputs:
            interp.set_tensor(in_index, x)
            interp.invoke()
            outputs.append(interp.get_tensor(out_index))
        per_inference_us = (clock_ns() - t0) // (1000 * count)
        return np.concatenate(outputs, axis=None).tobytes(), [per_inference_us] * count


class EngineModel:
    """A model run by the project's own int8 engine (firmware/engine)."""

    def __init__(self, path, arena_budget=None):
        from .engine import load
        self._interp = load(path, arena_budget=arena_budget)
        self.input_size = self._interp.input_size
        self.output_size = self._interp.output_size
        self.input_quant = self._interp.input_quant
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


def open_model(path, backend=None, arena_budget=None, num_threads=1):
    """Load a .tflite with the named backend, or the best one available."""
    name = backend or available()[0]
    if name == "engine":
        return name, EngineModel(path, arena_budget)
    cls = _interpreter_class(name)
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
