# Schema objects over a .tflite file for host tools (tools/models/make_vectors.py describes
# models with them). The engine itself never imports this module: it reads the file with
# loader's plain functions and keeps no object per tensor.
import struct

from . import loader

INT8 = loader.INT8
INT32 = loader.INT32
DTYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8"}


class Tensor:
    def __init__(self, graph, index):
        self.index = index
        fields = loader.tensor(graph, index)
        self.shape, self.dtype, self.nbytes, data, self.scale_bits, self.zero_point = fields
        self.data = None if data is None else memoryview(graph.data)[data:data + self.nbytes]
        self._quant = loader.quantization(fields)
        start, length = loader.vector(graph.data, graph.tensors[index], 3, 1)
        self.name = str(bytes(graph.data[start:start + length]), "utf-8")

    @property
    def scale(self):
        return [struct.unpack("<f", struct.pack("<I", b))[0] for b in self.scale_bits]

    @property
    def is_constant(self):
        return self.data is not None

    def quant(self):
        return self._quant


class Model:
    def __init__(self, data):
        self.graph = loader.parse(data)
        self.tensors = [Tensor(self.graph, i) for i in range(len(self.graph.tensors))]
        self.inputs = self.graph.inputs
        self.outputs = self.graph.outputs

    def op_names(self):
        seen = []
        for code, _, _, _ in self.graph.ops:
            name = loader.op_name(code)
            if name not in seen:
                seen.append(name)
        return seen
