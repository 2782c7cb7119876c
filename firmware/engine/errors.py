# Errors the int8 engine raises; all derive from the node runtime's FirmwareError so a node can
# report a bad model without crashing.
from ..errors import FirmwareError


class EngineError(FirmwareError):
    pass


class MalformedModel(EngineError):
    """The .tflite bytes do not parse; `offset` is the byte position where parsing failed."""

    def __init__(self, message, offset=None):
        super().__init__("%s (at offset %s)" % (message, offset))
        self.offset = offset


class UnsupportedOp(EngineError):
    """The model uses an operator (or an operator variant) the engine has no kernel for."""

    def __init__(self, op_name, op_code, op_index, detail=""):
        msg = "operator %d is %s (builtin code %s), which the engine does not support" % (
            op_index, op_name, op_code)
        if detail:
            msg += ": " + detail
        super().__init__(msg)
        self.op_name = op_name
        self.op_code = op_code
        self.op_index = op_index


class ModelTooLarge(EngineError):
    """The planned activation arena needs more bytes than the budget the caller allows."""

    def __init__(self, needed, budget):
        super().__init__("model needs a %d-byte arena, budget is %d bytes" % (needed, budget))
        self.needed = needed
        self.budget = budget
