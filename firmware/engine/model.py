# Read access to the parts of the TFLite schema (schema.fbs) the engine uses.
import struct

from . import flatbuf, opnames
from .errors import MalformedModel, EngineError

INT8 = 9
INT32 = 2
INT64 = 4
_ELEMENT_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1}
DTYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8"}

# Field indexes in schema.fbs tables.
_MODEL_OPCODES, _MODEL_SUBGRAPHS, _MODEL_BUFFERS = 1, 2, 4
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS, _SUBGRAPH_OPERATORS = 0, 1, 2, 3
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_BUFFER, _TENSOR_NAME, _TENSOR_QUANT = 0, 1, 2, 3, 4
_QUANT_SCALE, _QUANT_ZERO_POINT, _QUANT_DIMENSION = 2, 3, 6
_OPCODE_DEPRECATED, _OPCODE_BUILTIN = 0, 3
_OP_OPCODE, _OP_INPUTS, _OP_OUTPUTS, _OP_OPTIONS = 0, 1, 2, 4


class Tensor:
    __slots__ = ("index", "_table", "shape", "dtype", "data", "scale_bits", "zero_point",
                 "quantized_dimension", "nbytes")

    def __init__(self, index, table, buffers):
        self.index = index
        self._table = table
        self.shape = table.scalars(_TENSOR_SHAPE, "i") or []
        self.dtype = table.scalar(_TENSOR_TYPE, "b", 0)
        count = 1
        for d in self.shape:
            if d < 0:
                raise MalformedModel("tensor %d has a dynamic shape %s" % (index, self.shape), table.pos)
            count *= d
        self.nbytes = count * _ELEMENT_BYTES.get(self.dtype, 1)
        buffer_index = table.scalar(_TENSOR_BUFFER, "I", 0)
        if buffer_index >= len(buffers):
            raise MalformedModel("tensor %d names buffer %d of %d" % (index, buffer_index, len(buffers)),
                                 table.pos)
        data = buffers[buffer_index]
        if data is not None and len(data) == 0:
            data = None
        if data is not None and len(data) < self.nbytes:
            raise MalformedModel("tensor %d needs %d bytes, its buffer has %d" % (index, self.nbytes, len(data)),
                                 table.pos)
        self.data = data
        quant = table.table(_TENSOR_QUANT)
        if quant is not None:
            # Scales are kept as raw float32 bits too: multipliers are derived from them with
            # integer arithmetic, so boards whose MicroPython has single-precision floats get
            # exactly the multipliers TFLM computes in double precision.
            self.scale_bits = quant.scalars(_QUANT_SCALE, "I") or []
            self.zero_point = quant.scalars(_QUANT_ZERO_POINT, "q") or []
            self.quantized_dimension = quant.scalar(_QUANT_DIMENSION, "i", 0)
        else:
            self.scale_bits, self.zero_point, self.quantized_dimension = [], [], 0

    # Names and float scales are built on request: on a board each would be a heap object per
    # tensor (floats are boxed), kept for the model's lifetime and fragmenting a small heap.
    @property
    def name(self):
        return self._table.string(_TENSOR_NAME) or ""

    @property
    def scale(self):
        return [struct.unpack("<f", struct.pack("<I", b))[0] for b in self.scale_bits]

    @property
    def is_constant(self):
        return self.data is not None

    def quant(self):
        if not self.scale_bits:
            return (0.0, 0)
        scale = struct.unpack("<f", struct.pack("<I", self.scale_bits[0]))[0]
        return (scale, self.zero_point[0] if self.zero_point else 0)


class Operator:
    __slots__ = ("index", "code", "inputs", "outputs", "options")

    def __init__(self, index, table, codes):
        self.index = index
        opcode_index = table.scalar(_OP_OPCODE, "I", 0)
        if opcode_index >= len(codes):
            raise MalformedModel("operator %d uses opcode %d of %d" % (index, opcode_index, len(codes)),
                                 table.pos)
        self.code = codes[opcode_index]
        self.inputs = table.scalars(_OP_INPUTS, "i") or []
        self.outputs = table.scalars(_OP_OUTPUTS, "i") or []
        self.options = table.table(_OP_OPTIONS)

    @property
    def name(self):
        return opnames.name(self.code)


class Model:
    def __init__(self, data):
        if len(data) < 8:
            raise MalformedModel("model is %d bytes, shorter than a FlatBuffer header" % len(data), len(data))
        if bytes(data[4:8]) != b"TFL3":
            raise MalformedModel("missing TFL3 file identifier", 4)
        buf = flatbuf.Buffer(data)
        root = buf.root()
        self.codes = []
        for oc in root.tables(_MODEL_OPCODES):
            # Codes above 127 live only in the int32 field; the byte field is kept for old files.
            deprecated = oc.scalar(_OPCODE_DEPRECATED, "b", 0)
            builtin = oc.scalar(_OPCODE_BUILTIN, "i", 0)
            self.codes.append(max(deprecated, builtin))
        buffers = []
        for b in root.tables(_MODEL_BUFFERS):
            view = b.bytes_view(0)
            big_offset = b.scalar(1, "Q", 0)
            if view is None and big_offset > 1:
                size = b.scalar(2, "Q", 0)
                buf.check(big_offset, size)
                view = buf.view[big_offset:big_offset + size]
            buffers.append(view)
        subgraphs = root.tables(_MODEL_SUBGRAPHS)
        if not subgraphs:
            raise MalformedModel("model has no subgraph", root.pos)
        if len(subgraphs) > 1:
            raise EngineError("model has %d subgraphs; the engine runs single-subgraph models" % len(subgraphs))
        graph = subgraphs[0]
        self.tensors = [Tensor(i, t, buffers) for i, t in enumerate(graph.tables(_SUBGRAPH_TENSORS))]
        self.inputs = graph.scalars(_SUBGRAPH_INPUTS, "i") or []
        self.outputs = graph.scalars(_SUBGRAPH_OUTPUTS, "i") or []
        self.operators = [Operator(i, t, self.codes) for i, t in enumerate(graph.tables(_SUBGRAPH_OPERATORS))]
        n = len(self.tensors)
        for op in self.operators:
            for t in op.inputs + op.outputs:
                if t >= n:
                    raise MalformedModel("operator %d names tensor %d of %d" % (op.index, t, n), 0)
        for t in self.inputs + self.outputs:
            if not 0 <= t < n:
                raise MalformedModel("graph input/output names tensor %d of %d" % (t, n), 0)

    def op_names(self):
        seen = []
        for op in self.operators:
            if op.name not in seen:
                seen.append(op.name)
        return seen
