# The run-time half of the engine: an Interpreter holds a prepared model (one memory block
# and a list of kernel calls) and runs it. Preparing a model is loader.py's job; on a board
# that code is imported for load() and let go afterwards, because every function and constant
# of an imported module stays in RAM while a node has little heap to spare.
import sys

from . import quant  # noqa: F401 - run-time arithmetic the prepared steps call
from .errors import EngineError

IS_MICROPYTHON = sys.implementation.name == "micropython"


def _import_viper():
    if not IS_MICROPYTHON:
        return None
    try:
        from . import kernels_viper
        return kernels_viper
    except (ImportError, SyntaxError, ValueError):
        # A port without the native emitter rejects the viper decorator (SyntaxError) or an
        # .mpy built for another architecture (ValueError). A ViperTypeError (a TypeError) is a
        # bug in kernels_viper and is not caught here.
        return None


# Imported with the engine, not on first load(): loading native code from an .mpy needs
# contiguous heap that a just-read model leaves fragmented. The pure kernels, which a board
# with the native emitter never runs, are imported only when asked for.
VIPER = _import_viper()

# Kernels in Python index tensors as signed int8 and accumulators and parameters as int32.
# CPython gets that from memoryview.cast(); MicroPython has no cast, but uctypes lays an array
# over the same memory. Neither copies. The viper kernels take the raw bytes.
try:
    import uctypes
except ImportError:
    uctypes = None


def signed(view):
    if uctypes is None:
        return memoryview(view).cast("b")
    return uctypes.struct(uctypes.addressof(view), (uctypes.ARRAY, uctypes.INT8 | len(view)))


def int32(view):
    if uctypes is None:
        return memoryview(view).cast("i")
    return uctypes.struct(uctypes.addressof(view), (uctypes.ARRAY, uctypes.INT32 | (len(view) // 4)),
                          uctypes.NATIVE)


def copy(dst, src):
    dst[:] = src


def _with_loader(name, *args):
    if IS_MICROPYTHON:
        # Collected first, the heap takes the loader's code into its lowest holes, leaving the
        # larger free stretches to the blocks a model keeps.
        import gc
        gc.collect()
    from . import loader
    try:
        return getattr(loader, name)(*args)
    finally:
        if IS_MICROPYTHON:
            # Unloaded, its code is garbage: a loaded model then costs a node only what it keeps.
            # The same goes for the load-time modules it imports for some models.
            package = __name__[:__name__.rfind(".")]
            for name in ("loader", "fold", "prepare_ops"):
                if package + "." + name in sys.modules:
                    del sys.modules[package + "." + name]
                    delattr(sys.modules[package], name)


class Interpreter:
    def __init__(self, path_or_bytes, arena_budget=None, kernels=None):
        # Sets arena_bytes, kernels, input_size, output_size, input_quant, output_quant and
        # what invoke() runs: steps (kernel, arguments, kernel, ...) over memory.
        _with_loader("prepare", self, path_or_bytes, arena_budget, kernels)

    def invoke(self, data):
        """Run one inference. data: input_size int8 values as a bytes-like object. Returns a
        memoryview of the output's int8 values as raw bytes (reused; copy it to keep it)."""
        if len(data) != self.input_size:
            raise EngineError("input has %d bytes, model takes %d" % (len(data), self.input_size))
        self.input_view[:] = data
        steps = self.steps
        for i in range(0, len(steps), 2):
            # Spelled-out positional calls: MicroPython passes them on the stack, while a
            # f(*args) call allocates its argument array on the heap every time.
            fn, a = steps[i], steps[i + 1]
            n = len(a)
            if n == 4:
                fn(a[0], a[1], a[2], a[3])
            elif n == 3:
                fn(a[0], a[1], a[2])
            elif n == 2:
                fn(a[0], a[1])
            else:
                fn(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7])
        return self.output_view

    def output_int8(self):
        """The last output as a list of signed ints."""
        return [(v ^ 0x80) - 0x80 for v in self.output_view]


def arena_bytes_for(path_or_bytes):
    """Arena size the model needs, without preparing kernels (for placement decisions)."""
    return _with_loader("arena_bytes", path_or_bytes)


def load(path_or_bytes, arena_budget=None, kernels=None):
    """Parse and prepare a .tflite model. kernels: None (fastest available), 'pure' or 'viper'.
    A file is read in place, never whole; the model keeps no reference to path_or_bytes."""
    return Interpreter(path_or_bytes, arena_budget, kernels)
