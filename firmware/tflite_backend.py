# Linux nodes only: models run by a TensorFlow Lite interpreter (LiteRT or tflite-runtime).
# Kept apart from backends.py so a microcontroller never loads this code.
from .backends import BackendError


def interpreter_class(name):
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
        self.input_shape = [int(d) for d in self._in_shape]
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
