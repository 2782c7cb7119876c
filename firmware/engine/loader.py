# Load-time half of the engine: reads a .tflite file, plans its activation arena and prepares
# each operator into one kernel call with its parameters, doing all per-model arithmetic
# (multipliers, clamp ranges, folded biases, geometry) so that invoke() only moves int8 data.
#
# On a board this module is imported by load() and let go when load() returns (see
# interpreter._with_loader), so its code holds heap only while a model loads. The FlatBuffer is
# read in place with plain functions and no object per table, tensor or operator; a prepared
# model keeps its arena (with the accumulators), its steps and its filters: copied out of the
# file, or, for a file in a ROMFS image (a zero-copy memoryview of flash), used where they lie.
#
# Multipliers: TFLM derives them from float32 scales in double precision. They are derived here
# from the scales' raw float32 bits with exact integer arithmetic that reproduces each double
# rounding, so a board whose MicroPython floats are single precision still gets identical values.
import struct
import sys

from . import quant
from .errors import EngineError, MalformedModel, UnsupportedOp, ModelTooLarge
from .quant import bit_length, INT32_MAX, SCALED_DIFF_INTEGER_BITS
from .interpreter import IS_MICROPYTHON, VIPER, signed, int32, copy

# The supported ops' codes, repeated from opnames.py on purpose: that module holds the whole
# name table (~2 KB of heap) and is imported only to name an op the engine refuses.
AVERAGE_POOL_2D = 1
CONV_2D = 3
DEPTHWISE_CONV_2D = 4
FULLY_CONNECTED = 9
MAX_POOL_2D = 17
RESHAPE = 22
SOFTMAX = 25
# Prepared by prepare_ops.py (imported only for a model that has one): ADD, CONCATENATION,
# DEQUANTIZE, LOGISTIC, MUL, TANH, PAD, MEAN, SUB, SQUEEZE, STRIDED_SLICE, EXPAND_DIMS, SHAPE,
# PACK, LEAKY_RELU, QUANTIZE, HARD_SWISH. SHAPE, STRIDED_SLICE and PACK only fold (fold.py).
OPS = (0, 2, 6, 14, 18, 28, 34, 40, 41, 43, 45, 70, 77, 83, 98, 114, 117)
FOLDABLE = (45, 77, 83)
SUPPORTED = (AVERAGE_POOL_2D, CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, MAX_POOL_2D, RESHAPE, SOFTMAX) + OPS
INT8 = 9
INT32 = 2
# Bytes per element by TensorType code (float32, float16, int32, uint8, int64, string, bool,
# int16, complex64, int8); other types count one byte, as no kernel reads them.
_ELEMENT_BYTES = b"\x04\x02\x04\x01\x08\x01\x01\x02\x01\x01"


# ---- FlatBuffer reading (schema.fbs). Positions are byte offsets into the file; a table is
# its position, 0 when absent. Every read is bounds-checked so that a truncated or corrupt file
# raises MalformedModel naming the offending offset. The model is bytes or a ModelFile.

class ModelFile:
    """A .tflite file read in place, a few bytes at a time: a board never needs the whole
    file in one contiguous block of its heap, which after a while may have none that large."""

    def __init__(self, path):
        self.file = open(path, "rb")
        self.size = self.file.seek(0, 2)

    def __len__(self):
        return self.size


def _bytes(d, pos, n):
    if isinstance(d, ModelFile):
        d.file.seek(pos)
        return d.file.read(n)
    return bytes(d[pos:pos + n])


def _copy_into(d, pos, dst):
    if isinstance(d, ModelFile):
        d.file.seek(pos)
        d.file.readinto(dst)
    else:
        dst[:] = memoryview(d)[pos:pos + len(dst)]


def _read(d, fmt, pos):
    size = struct.calcsize(fmt)
    if pos < 0 or pos + size > len(d):
        raise MalformedModel("past the end", pos)
    if isinstance(d, ModelFile):
        return struct.unpack(fmt, _bytes(d, pos, size))[0]
    # In place: no bytes object per field, so parsing leaves no garbage to fragment the heap.
    return struct.unpack_from(fmt, d, pos)[0]


def _ref(d, pos):
    # uoffset_t fields point forward, relative to where they are stored.
    target = pos + _read(d, "<I", pos)
    if target >= len(d):
        raise MalformedModel("past the end", pos)
    return target


def _field(d, table, index):
    """Position of a table's field, 0 when the field is absent."""
    vtable = table - _read(d, "<i", table)
    size = _read(d, "<H", vtable)
    if size < 4 or size & 1:
        raise MalformedModel("bad vtable", vtable)
    if 4 + 2 * index >= size:
        return 0
    off = _read(d, "<H", vtable + 4 + 2 * index)
    return table + off if off else 0


def scalar(d, table, index, fmt, default=0):
    pos = _field(d, table, index) if table else 0
    return _read(d, fmt, pos) if pos else default


def _table(d, table, index):
    pos = _field(d, table, index)
    return _ref(d, pos) if pos else 0


def vector(d, table, index, size):
    """(position of the first element, length); length 0 when the field is absent."""
    pos = _field(d, table, index)
    if not pos:
        return 0, 0
    start = _ref(d, pos)
    n = _read(d, "<I", start)
    if start + 4 + n * size > len(d):
        raise MalformedModel("past the end", start)
    return start + 4, n


def _ints(d, table, index, fmt):
    size = struct.calcsize(fmt)
    start, n = vector(d, table, index, size)
    if isinstance(d, ModelFile):
        d, start = _bytes(d, start, n * size), 0
    return [struct.unpack_from(fmt, d, start + i * size)[0] for i in range(n)]


def _tables(d, table, index):
    start, n = vector(d, table, index, 4)
    return [_ref(d, start + 4 * i) for i in range(n)]


class Graph:
    # What the planner and the preparation read of a model; dropped once load() returns.
    pass


def parse(d):
    if len(d) < 8:
        raise MalformedModel("too short", len(d))
    if _bytes(d, 4, 4) != b"TFL3":
        raise MalformedModel("no TFL3 identifier", 4)
    g = Graph()
    g.data = d
    root = _ref(d, 0)
    # Codes above 127 live only in the int32 field; the byte field is kept for old files.
    codes = [max(scalar(d, t, 0, "<b"), scalar(d, t, 3, "<i")) for t in _tables(d, root, 1)]
    g.buffers = _tables(d, root, 4)
    subgraphs = _tables(d, root, 2)
    if not subgraphs:
        raise MalformedModel("no subgraph", root)
    if len(subgraphs) > 1:
        raise EngineError("%d subgraphs; the engine runs one" % len(subgraphs))
    graph = subgraphs[0]
    g.tensors = _tables(d, graph, 0)
    n = len(g.tensors)
    # Validates every tensor up front, as a truncated file must fail here and not in a kernel.
    g.sizes = [tensor(g, t)[2] for t in range(n)]
    g.inputs = _ints(d, graph, 1, "<i")
    g.outputs = _ints(d, graph, 2, "<i")
    g.ops = []
    for i, op in enumerate(_tables(d, graph, 3)):
        opcode = scalar(d, op, 0, "<I")
        if opcode >= len(codes):
            raise MalformedModel("bad opcode index", op)
        inputs, outputs = _ints(d, op, 1, "<i"), _ints(d, op, 2, "<i")
        for t in inputs + outputs:
            if t >= n:
                raise MalformedModel("bad tensor index", op)
        g.ops.append((codes[opcode], inputs, outputs, _table(d, op, 4)))
    for t in g.inputs + g.outputs:
        if not 0 <= t < n:
            raise MalformedModel("bad tensor index", graph)
    g.folded, g.values, g.fold_refusals = {}, {}, {}
    for code, _, _, _ in g.ops:
        if code in FOLDABLE:
            from . import fold
            fold.fold(g)
            break
    return g


def tensor(g, index):
    """[shape, type, byte size, position of its constant data or None, scale bits, zero points].

    Scales stay raw float32 bits: multipliers are derived from them with integer arithmetic, so
    boards whose MicroPython floats are single precision get exactly TFLM's double-precision
    multipliers."""
    d = g.data
    t = g.tensors[index]
    shape = _ints(d, t, 0, "<i")
    dtype = scalar(d, t, 1, "<b")
    count = 1
    for n in shape:
        if n < 0:
            raise MalformedModel("dynamic shape", t)
        count *= n
    nbytes = count * (_ELEMENT_BYTES[dtype] if 0 <= dtype < 10 else 1)
    buffer = scalar(d, t, 2, "<I")
    if buffer >= len(g.buffers):
        raise MalformedModel("bad buffer index", t)
    start, size = vector(d, g.buffers[buffer], 0, 1)
    if not size:
        # Models over 2 GB keep buffers outside the FlatBuffer, at an offset and size.
        start = scalar(d, g.buffers[buffer], 1, "<Q")
        if start > 1:
            size = scalar(d, g.buffers[buffer], 2, "<Q")
            if start + size > len(d):
                raise MalformedModel("past the end", start)
    data = None
    if size:
        if size < nbytes:
            raise MalformedModel("buffer too small", t)
        data = start
    q = _table(d, t, 4)
    if q:
        return [shape, dtype, nbytes, data, _ints(d, q, 2, "<I"), _ints(d, q, 3, "<q")]
    return [shape, dtype, nbytes, data, [], []]


def plan(g):
    """(arena size, {tensor: offset}). A tensor is live from the operator that writes it (or
    the start, for graph inputs) to the last that reads it (or the end, for graph outputs);
    tensors are placed largest first at the lowest 4-aligned offset that overlaps no placed
    tensor live at the same time: TFLM's GreedyMemoryPlanner without its scratch buffers."""
    end = len(g.ops)
    sizes = g.sizes
    live = {}
    for t in g.inputs:
        live[t] = [0, 0]
    for i in range(end):
        code, inputs, outputs, _ = g.ops[i]
        if i in g.folded:
            continue   # computed at load (fold.py): no activation memory
        if code == RESHAPE:
            inputs = inputs[:1]   # the new shape is read at load, never at run time
        for t in outputs:
            if t >= 0 and tensor(g, t)[3] is None and t not in live:
                live[t] = [i, i]
        for t in inputs:
            if t >= 0 and tensor(g, t)[3] is None:
                if t not in live:
                    live[t] = [0, i]
                live[t][1] = max(live[t][1], i)
    for t in g.outputs:
        if t in live:
            live[t][1] = end
        else:
            live[t] = [0, end]
    placed = []  # (offset, end, first op, last op)
    offsets = {}
    arena = 0
    for t in sorted(live, key=lambda t: (-sizes[t], t)):
        first, last = live[t]
        size = (sizes[t] + 3) & ~3
        offset = 0
        for o, e in sorted((o, e) for o, e, f, l in placed if f <= last and first <= l):
            if offset + size <= o:
                break
            if e > offset:
                offset = e
        offsets[t] = offset
        placed.append((offset, offset + size, first, last))
        arena = max(arena, offset + size)
    return arena, offsets


# ---- exact emulation of the float/double computations TFLM does at prepare time ----

def f32_parts(bits):
    """(mantissa, exponent) with value == mantissa * 2**exponent, sign dropped (scales are > 0)."""
    exp = (bits >> 23) & 0xFF
    frac = bits & 0x7FFFFF
    if exp == 0:
        return frac, -149
    return frac | 0x800000, exp - 150


def round_ratio(num, den, bits):
    """num/den (positive ints) rounded to nearest-even with `bits` significant bits:
    returns (d, e) with 2**(bits-1) <= d < 2**bits and d * 2**e the rounded value."""
    e = bit_length(num) - bit_length(den) - bits
    while True:
        if e >= 0:
            divisor = den << e
            q, r = divmod(num, divisor)
        else:
            divisor = den
            q, r = divmod(num << -e, den)
        if q >= (1 << bits):
            e += 1
        elif q < (1 << (bits - 1)):
            e -= 1
        else:
            break
    twice = 2 * r
    if twice > divisor or (twice == divisor and q & 1):
        q += 1
        if q == (1 << bits):
            q >>= 1
            e += 1
    return q, e


def quantize_multiplier(mantissa, exponent):
    """TFLM QuantizeMultiplier for the double value mantissa * 2**exponent (exactly
    representable in a double): returns (Q31 multiplier, shift)."""
    if mantissa == 0:
        return 0, 0
    d, e = round_ratio(mantissa, 1, 53)
    # frexp gives d / 2**53 in [0.5, 1) with exponent e + 53; round(q * 2**31) rounds the 53-bit
    # mantissa to 31 bits, halves away from zero.
    q_fixed = (d + (1 << 21)) >> 22
    shift = e + exponent + 53
    if q_fixed == (1 << 31):
        q_fixed >>= 1
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def multiplier(input_bits, filter_bits, output_bits, per_channel):
    """(Q31 multiplier, shift) for a filter scale. Per-channel (conv, depthwise, per-channel
    fully connected): double(in) * double(filter) / double(out). Per-tensor fully connected
    rounds the in * filter product to float32 first."""
    mi, ei = f32_parts(input_bits)
    mf, ef = f32_parts(filter_bits)
    mo, eo = f32_parts(output_bits)
    p, ep = (mi * mf, 0) if per_channel else round_ratio(mi * mf, 1, 24)
    d, e = round_ratio(p, mo, 53)
    return quantize_multiplier(d, e + ep + ei + ef - eo)


def _round_half_away(d, e):
    """round(d * 2**e) for d >= 0, halves away from zero."""
    if e >= 0:
        return d << e
    return (d + (1 << (-e - 1))) >> -e


def quantize_value(real_num, real_den, scale_bits, zero_point):
    """TFLM's activation-range helper: zero_point + round(float32(f / scale)), f = num/den."""
    if real_num == 0:
        return zero_point
    sign = -1 if real_num < 0 else 1
    ms, es = f32_parts(scale_bits)
    d, e = round_ratio(abs(real_num), real_den * ms, 24)
    return zero_point + sign * _round_half_away(d, e - es)


def activation_range(activation, scale_bits, zero_point):
    """(min, max) int8 clamp for a fused activation (0 none, 1 RELU, 2 RELU_N1_TO_1, 3 RELU6)."""
    lo, hi = -128, 127
    if activation == 1:
        lo = max(lo, quantize_value(0, 1, scale_bits, zero_point))
    elif activation == 3:
        lo = max(lo, quantize_value(0, 1, scale_bits, zero_point))
        hi = min(hi, quantize_value(6, 1, scale_bits, zero_point))
    elif activation == 2:
        lo = max(lo, quantize_value(-1, 1, scale_bits, zero_point))
        hi = min(hi, quantize_value(1, 1, scale_bits, zero_point))
    elif activation != 0:
        return None
    return lo, hi



def softmax_prepare(beta_bits, input_scale_bits):
    """(input multiplier, left shift, diff_min) from beta and the input scale."""
    mb, eb = f32_parts(beta_bits)
    mi, ei = f32_parts(input_scale_bits)
    # beta * input_scale * 2**(31 - 5), capped at 2**31 - 1: exact in double, so exact here.
    num, exp = mb * mi, eb + ei + 31 - SCALED_DIFF_INTEGER_BITS
    if (exp >= 0 and (num << exp) > INT32_MAX) or (exp < 0 and num > (INT32_MAX << -exp)):
        num, exp = INT32_MAX, 0
    multiplier, shift = quantize_multiplier(num, exp)
    # CalculateInputRadius: floor((2**5 - 1) * 2**26 / 2**shift).
    radius = (((1 << SCALED_DIFF_INTEGER_BITS) - 1) << (31 - SCALED_DIFF_INTEGER_BITS)) >> shift
    return multiplier, shift, -radius


def op_name(code):
    # The name table is imported only to word an error: on a board it is 1.5 KB of string.
    from .opnames import name
    return name(code)


def _open(source):
    """The model as a buffer when it can be read in place, else a ModelFile. A file in a ROMFS
    image (vfs.VfsRom: code and models executed in place, docs/ota.md) is a zero-copy
    memoryview of the mapped flash: the engine then reads its fields and uses its filters where
    they lie, and no byte of the file is copied into the heap. Other files have no buffer."""
    if not isinstance(source, str):
        return source
    with open(source, "rb") as f:
        try:
            return memoryview(f)
        except TypeError:
            pass
    return ModelFile(source)


def _close(d):
    if isinstance(d, ModelFile):
        d.file.close()


def arena_bytes(source):
    d = _open(source)
    try:
        return plan(parse(d))[0]
    finally:
        _close(d)


def _pack(values):
    """An int32 parameter block (native byte order, as the kernels read it)."""
    buf = bytearray(4 * len(values))
    for i in range(len(values)):
        struct.pack_into("i", buf, 4 * i, values[i])
    return buf


def quantization(t):
    """(float scale, zero point) of a tensor's first quantization channel."""
    if not t[4]:
        return (0.0, 0)
    return (struct.unpack("<f", struct.pack("<I", t[4][0]))[0], t[5][0] if t[5] else 0)


def prepare(interp, source, arena_budget, kernels):
    """Sets up interp (an interpreter.Interpreter) to run the model in source (a path or the
    file's bytes)."""
    d = _open(source)
    try:
        # A file read in place (a ROMFS file) lasts as long as the board: its filters are used
        # where they lie. Bytes handed in are the caller's, so filters are copied out of them.
        _prepare(interp, d, arena_budget, kernels, isinstance(source, str) and not isinstance(d, ModelFile))
    finally:
        _close(d)


def _prepare(interp, d, arena_budget, kernels, in_place=False):
    g = parse(d)
    interp.arena_bytes = plan(g)[0]
    if arena_budget is not None and interp.arena_bytes > arena_budget:
        raise ModelTooLarge(interp.arena_bytes, arena_budget)
    if kernels is None:
        kernels = "viper" if VIPER else "pure"
    if kernels == "viper":
        if VIPER is None:
            raise EngineError("viper kernels need the native emitter")
        g.kernels = VIPER
    elif kernels == "pure":
        from . import kernels_pure
        g.kernels = kernels_pure
    else:
        raise ValueError("kernels must be 'pure', 'viper' or None")
    interp.kernels = kernels
    # Room for the int32 accumulators of the op being run, after the arena, and for the
    # filters, copied out of the file so that the file can be let go.
    scratch = 0
    filter_sizes = []
    for i in range(len(g.ops)):
        code, inputs, outputs, _ = g.ops[i]
        if code not in SUPPORTED:
            raise UnsupportedOp(op_name(code), code, i)
        if code in (FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D):
            scratch = max(scratch, 4 * g.sizes[outputs[0]])
            filter_sizes.append(g.sizes[inputs[1]])
    kernel_set = g.kernels
    if IS_MICROPYTHON:
        # The parse's many small objects lie scattered over the heap, and on a small board heap
        # they can leave no hole as large as the arena or a filter between them. So drop the
        # parse, allocate those blocks into the emptied heap, then parse again.
        import gc
        g = None
        gc.collect()
    memory = memoryview(bytearray(interp.arena_bytes + scratch))
    filters = None if in_place else [bytearray(n) for n in filter_sizes]
    if g is None:
        g = parse(d)
        g.kernels = kernel_set
    g.offsets = plan(g)[1]
    g.memory = memory
    # The accumulators, shared by every op (each writes as many as its output has values).
    g.acc = memory[interp.arena_bytes:]
    # How the kernels and requantization take them: raw bytes for viper, int32 for Python.
    g.acc_int32 = int32(g.acc) if g.acc else None
    g.acc_view = g.acc if kernel_set is VIPER else g.acc_int32
    g.filters = filters
    g.views = {}
    interp.memory = memory
    # (kernel, its arguments, kernel, its arguments, ...): a pair tuple per step would cost a
    # heap object each.
    steps = []
    for i in range(len(g.ops)):
        _prepare_op(steps, g, i)
    interp.steps = tuple(steps)
    inp = tensor(g, g.inputs[0])
    out = tensor(g, g.outputs[0])
    interp.input_size = inp[2]
    interp.output_size = out[2]
    interp.input_quant = quantization(inp)
    interp.input_shape = inp[0]
    interp.output_quant = quantization(out)
    interp.input_view = _activation(g, g.inputs[0])
    interp.output_view = _activation(g, g.outputs[0])


def _activation(g, t):
    """The raw bytes of an activation tensor in the arena, one view per tensor."""
    view = g.views.get(t)
    if view is None:
        off = g.offsets[t]
        view = g.views[t] = g.memory[off:off + g.sizes[t]]
    return view


def _same(view):
    return view


def _prepare_op(steps, g, index):
    code, inputs, outputs, opts = g.ops[index]
    d = g.data

    def refuse(why):
        return UnsupportedOp(op_name(code), code, index, why)

    if code in OPS:
        from . import prepare_ops
        prepare_ops.prepare(steps, g, index, refuse)
        return
    x, out = tensor(g, inputs[0]), tensor(g, outputs[0])
    for t in (x, out):
        if t[1] != INT8:
            raise refuse("tensor type %d is not int8" % t[1])
    kernels = g.kernels
    # The viper kernels take raw bytes; the Python ones signed int8 and int32 views of them.
    pure = kernels is not VIPER
    view = signed if pure else _same
    params = int32 if pure else _same
    src, dst = _activation(g, inputs[0]), _activation(g, outputs[0])
    if code == RESHAPE:
        if x[2] != out[2]:
            raise refuse("reshape changes the size")
        if index in getattr(g, "fold_refusals", ()):
            raise refuse(g.fold_refusals[index])
        if len(inputs) > 1 and inputs[1] >= 0 and tensor(g, inputs[1])[3] is None and inputs[1] not in g.values:
            raise refuse("the new shape is computed at run time")
        steps += (copy, (dst, src))
        return
    if code == SOFTMAX:
        if out[4][:1] != [0x3B800000] or quantization(out)[1] != -128:
            raise refuse("output scale must be 1/256, zero point -128")
        input_multiplier, shift, diff_min = softmax_prepare(scalar(d, opts, 0, "<I", 0x3F800000), x[4][0])
        depth = x[0][-1]
        steps += (quant.softmax_int8, (src, dst, x[2] // depth, depth, input_multiplier, shift, diff_min,
                                       [0] * depth))
        return
    if code in (MAX_POOL_2D, AVERAGE_POOL_2D):
        if not opts:
            raise refuse("missing options")
        if x[4][:1] != out[4][:1] or quantization(x)[1] != quantization(out)[1]:
            raise refuse("in and out quantization differ")
        geometry = _geometry(refuse, d, opts, x, out, scalar(d, opts, 4, "<i", 1), scalar(d, opts, 3, "<i", 1), 0)
        if geometry[2] != geometry[5]:
            raise refuse("pool changes the channels")
        lo, hi = _clamp(refuse, scalar(d, opts, 5, "<b"), out)
        # Clamp bounds biased by +128 compare in the viper kernels' unsigned bytes.
        fn = kernels.max_pool if code == MAX_POOL_2D else kernels.average_pool
        steps += (fn, (view(src), view(dst), params(_pack(geometry[:5] + geometry[6:12] + [lo + 128, hi + 128]))))
        return
    w = tensor(g, inputs[1])
    if w[3] is None:
        raise refuse("filter not constant")
    if code == FULLY_CONNECTED:
        if len(w[0]) != 2:
            raise refuse("bad filter shape")
        channels, depth = w[0]
        if x[2] != depth or out[2] != channels:
            raise refuse("batch must be 1")
        act = scalar(d, opts, 0, "<b")
    else:
        if len(w[0]) != 4 or not opts:
            raise refuse("bad filter shape")
        depthwise = code == DEPTHWISE_CONV_2D
        geometry = _geometry(refuse, d, opts, x, out, w[0][1], w[0][2], 5 if depthwise else 4)
        act = scalar(d, opts, 4 if depthwise else 3, "<b")
        channels = geometry[5]
        if (w[0][3] != channels or channels % geometry[2]) if depthwise else (
                w[0][0] != channels or w[0][3] != geometry[2]):
            raise refuse("bad filter shape")
    lo, hi = _clamp(refuse, act, out)
    in_off = -quantization(x)[1]
    bias = [0] * channels
    if len(inputs) > 2 and inputs[2] >= 0:
        b = tensor(g, inputs[2])
        if b[1] != INT32 or b[3] is None or b[2] != 4 * channels:
            raise refuse("bias not constant int32")
        bias = list(struct.unpack("<%di" % channels, _bytes(d, b[3], 4 * channels)))
    if g.filters is None:
        filters = d[w[3]:w[3] + w[2]]   # in place, in mapped flash
    else:
        # Copied out of the file, which load() does not keep.
        filters = g.filters.pop(0)
        _copy_into(d, w[3], filters)
    if code == FULLY_CONNECTED:
        # sum((x + in_off) * w) + b == sum(x * w) + (b + in_off * sum(w)): the kernel adds
        # the folded bias and needs no per-element offset.
        for o in range(channels):
            s = 0
            for i in range(o * depth, (o + 1) * depth):
                s += (filters[i] ^ 0x80) - 0x80
            bias[o] += in_off * s
        packed = [depth, channels] + bias
        fn = kernels.fully_connected
    else:
        packed = geometry + [in_off] + bias
        fn = kernels.depthwise_conv2d if depthwise else kernels.conv2d
    steps += (fn, (view(src), view(filters), g.acc_view, params(_pack(packed))))
    # Requantization of the accumulators into the int8 output, per output channel.
    scales = w[4]
    if len(scales) not in (1, channels):
        raise refuse("filter has %d scales" % len(scales))
    for zp in w[5]:
        if zp:
            raise refuse("filter zero point not 0")
    packed = [len(scales), quantization(out)[1] + 128, lo + 128, hi + 128]
    for s in scales:
        mult, shift = multiplier(x[4][0], s, out[4][0], code != FULLY_CONNECTED or len(scales) > 1)
        packed += [mult, max(shift, 0), max(-shift, 0)]
    if not pure and sys.maxsize > (1 << 32):
        steps += (VIPER.requantize_64bit, (g.acc, dst, _pack(packed), out[2]))
    else:
        # 32-bit words cannot hold the int32 x Q31 product in viper; Python's long ints can.
        steps += (quant.requantize, (g.acc_int32, signed(dst), int32(_pack(packed)), out[2]))


def _geometry(refuse, d, opts, x, out, k_h, k_w, dilation_field):
    """[in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, s_h, s_w, p_h, p_w, d_h, d_w]."""
    if len(x[0]) != 4 or x[0][0] != 1 or len(out[0]) != 4:
        raise refuse("batch must be 1")
    padding = scalar(d, opts, 0, "<b")
    s_w = scalar(d, opts, 1, "<i", 1)
    s_h = scalar(d, opts, 2, "<i", 1)
    d_w = scalar(d, opts, dilation_field, "<i", 1) if dilation_field else 1
    d_h = scalar(d, opts, dilation_field + 1, "<i", 1) if dilation_field else 1
    in_h, in_w = x[0][1], x[0][2]
    out_h, out_w = out[0][1], out[0][2]
    eff_h = (k_h - 1) * d_h + 1
    eff_w = (k_w - 1) * d_w + 1
    if padding == 0:  # SAME
        want = ((in_h + s_h - 1) // s_h, (in_w + s_w - 1) // s_w)
    else:  # VALID
        want = ((in_h - eff_h + s_h) // s_h, (in_w - eff_w + s_w) // s_w)
    if want != (out_h, out_w):
        raise refuse("bad output shape")
    # TFLM pads by half the total, the odd pixel going after the image (bottom/right).
    return [in_h, in_w, x[0][3], out_h, out_w, out[0][3], k_h, k_w, s_h, s_w,
            max(((out_h - 1) * s_h + eff_h - in_h) // 2, 0), max(((out_w - 1) * s_w + eff_w - in_w) // 2, 0),
            d_h, d_w]


def _clamp(refuse, activation, out):
    bounds = activation_range(activation, out[4][0], quantization(out)[1])
    if bounds is None:
        raise refuse("fused activation %d" % activation)
    return bounds
