# A pure-Python int8 TFLite interpreter for MicroPython boards (and CPython), bit-exact with
# TensorFlow Lite Micro's reference kernels. On a board the package is `firmware.engine`; in
# CPython it is `edgefleet.firmware.engine`.
from .errors import EngineError, MalformedModel, UnsupportedOp, ModelTooLarge  # noqa: F401
from .interpreter import load, arena_bytes_for, Interpreter  # noqa: F401
