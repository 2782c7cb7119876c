# Load-time preparation of the elementwise, shape, conversion and activation ops (the kernels
# are in kernels_ops.py). Like loader.py, imported only while a model loads, and only for a
# model that has one of these ops.
#
# TFLM derives each op's parameters in float32 and double arithmetic; they are derived here with
# exact integer arithmetic on the scales' float32 bits (loader.round_ratio emulates a rounded
# float32 or double operation), so that a board with single-precision floats gets TFLM's values.
#
# Unary int8 -> int8 ops (LEAKY_RELU, LOGISTIC, TANH, HARD_SWISH, int8 QUANTIZE) are run as a
# 256-byte table: each of the 256 possible inputs is put through TFLM's own fixed-point
# arithmetic once, here, so the table is bit-exact by construction and an inference only looks
# values up. So is ADD, SUB or MUL with a constant scalar operand.
#
# With the viper kernels, ADD, SUB, MUL, MEAN and float QUANTIZE go by thresholds instead (see
# kernels_viper): their output is a non-decreasing function of one integer, and the integers at
# which it steps up are found here by putting candidates through the pure kernels' arithmetic.
import struct
from array import array

from . import loader
from . import kernels_ops as k
from .interpreter import int32, VIPER
from .loader import (INT8, tensor, scalar, quantization, f32_parts, round_ratio, quantize_multiplier,
                     multiplier, _activation, _clamp, _bytes)
from .quant import (srdhm, rounding_divide_by_pot, saturating_shift_left, wrap32, exp_on_negative_values,
                    _exp_on_interval, _one_over_one_plus_x, INT32_MAX)

ADD = 0
CONCATENATION = 2
DEQUANTIZE = 6
LOGISTIC = 14
MUL = 18
TANH = 28
PAD = 34
MEAN = 40
SUB = 41
SQUEEZE = 43
STRIDED_SLICE = 45
EXPAND_DIMS = 70
SHAPE = 77
PACK = 83
LEAKY_RELU = 98
QUANTIZE = 114
HARD_SWISH = 117
CODES = (ADD, CONCATENATION, DEQUANTIZE, LOGISTIC, MUL, TANH, PAD, MEAN, SUB, SQUEEZE, STRIDED_SLICE,
         EXPAND_DIMS, SHAPE, PACK, LEAKY_RELU, QUANTIZE, HARD_SWISH)
FLOAT32 = 0


def _int8(refuse, *ts):
    for t in ts:
        if t[1] != INT8:
            raise refuse("tensor type %d is not int8" % t[1])


def _zp(t):
    return quantization(t)[1]


def _shifts(shift):
    return max(shift, 0), max(-shift, 0)


def mbqm(x, m, shift):
    """TFLM MultiplyByQuantizedMultiplier for any sign of m (LEAKY_RELU's alpha may make it 0)."""
    ls, rs = _shifts(shift)
    return rounding_divide_by_pot(srdhm(wrap32(x << ls), m), rs)


def _ratio(num_bits, num_exp, den_bits, den_exp):
    """QuantizeMultiplier(double(num) * 2**num_exp / (double(den) * 2**den_exp)): one rounded
    double division of float32 values."""
    mn, en = f32_parts(num_bits)
    md, ed = f32_parts(den_bits)
    d, e = round_ratio(mn, md, 53)
    return quantize_multiplier(d, e + en + num_exp - ed - den_exp)


def _f32(num, den):
    """float32 num / den of positive ints as (mantissa, exponent): a rounded float32 operation."""
    return round_ratio(num, den, 24)


def _table(refuse, f):
    table = bytearray(256)
    for raw in range(256):
        y = f((raw ^ 0x80) - 0x80)
        table[raw] = (-128 if y < -128 else (127 if y > 127 else y)) & 0xFF
    return table


def _ints(g, refuse, t, what):
    """The values of a constant (or folded) int32/int64 tensor."""
    values = getattr(g, "values", {}).get(t)
    if values is None:
        fields = tensor(g, t)
        if fields[3] is None or fields[1] not in (2, 4):
            raise refuse("%s is not a constant integer tensor" % what)
        fmt, size = ("<i", 4) if fields[1] == 2 else ("<q", 8)
        raw = _bytes(g.data, fields[3], fields[2])
        values = [struct.unpack_from(fmt, raw, i * size)[0] for i in range(fields[2] // size)]
    return values


def _dims4(refuse, shape):
    if len(shape) > 4:
        raise refuse("%d dimensions; the engine handles up to 4" % len(shape))
    return [1] * (4 - len(shape)) + list(shape)


def _operand(g, t):
    """An input's bytes: its arena view, or for a constant a copy out of the file."""
    fields = tensor(g, t)
    if fields[3] is None:
        return _activation(g, t)
    buf = bytearray(fields[2])
    loader._copy_into(g.data, fields[3], buf)
    return buf


def _broadcast(refuse, a, b, out):
    """[d0..d3 of the output, strides of a (4), strides of b (4)], stride 0 where an input of
    size 1 is broadcast, as TFLM's BroadcastBinaryFunction walks it."""
    o = _dims4(refuse, out)
    p = list(o)
    for shape in (a, b):
        s = _dims4(refuse, shape)
        strides = [0, 0, 0, 0]
        step = 1
        for i in (3, 2, 1, 0):
            if s[i] != o[i] and s[i] != 1:
                raise refuse("shapes %s and %s do not broadcast to %s" % (a, b, out))
            strides[i] = step if s[i] != 1 else 0
            step *= s[i]
        p += strides
    return p


def prepare(steps, g, index, refuse):
    code, inputs, outputs, opts = g.ops[index]
    d = g.data
    x, out = tensor(g, inputs[0]), tensor(g, outputs[0])
    if code in (SHAPE, STRIDED_SLICE, PACK):
        if index not in getattr(g, "folded", {}):
            raise refuse(getattr(g, "fold_refusals", {}).get(index) or "not foldable at load")
        return
    if code in (SQUEEZE, EXPAND_DIMS):
        _int8(refuse, x, out)
        if x[2] != out[2]:
            raise refuse("changes the size")
        steps += (loader.copy, (_activation(g, outputs[0]), _activation(g, inputs[0])))
        return
    if code == QUANTIZE and x[1] == FLOAT32:
        _int8(refuse, out)
        s = struct.unpack("<f", struct.pack("<I", out[4][0]))[0]
        p = (k.float_view(_activation(g, inputs[0])), s, _zp(out), array("f", [0.0]))
        if g.kernels is VIPER:
            steps += (VIPER.quantize, (_activation(g, inputs[0]), _activation(g, outputs[0]),
                                       _quantize_params(p), out[2]))
        else:
            steps += (k.quantize, (None, _activation(g, outputs[0]), p))
        return
    if code == DEQUANTIZE:
        _int8(refuse, x)
        if out[1] != FLOAT32:
            raise refuse("output type %d is not float32" % out[1])
        s, zp = quantization(x)
        raw_table = bytearray(1024)
        table = k.float_view(raw_table)
        for raw in range(256):
            # float32(double(scale) * (v - zero point)): the double product is exact, so storing it
            # rounds once, as TFLM's cast does.
            table[raw] = s * ((raw ^ 0x80) - 0x80 - zp)
        if g.kernels is VIPER:
            steps += (VIPER.lut32, (_activation(g, inputs[0]), _activation(g, outputs[0]), raw_table, x[2]))
        else:
            steps += (k.dequantize, (_activation(g, inputs[0]), k.float_view(_activation(g, outputs[0])), table))
        return
    dst = _activation(g, outputs[0])
    if code == CONCATENATION:
        _concat(steps, g, refuse, inputs, out, opts, dst)
        return
    _int8(refuse, x, out)
    src = _activation(g, inputs[0])
    if code in (ADD, SUB, MUL):
        _binary(steps, g, refuse, code, inputs, x, out, opts, dst)
    elif code == PAD:
        _pad(steps, g, refuse, inputs, x, out, src, dst)
    elif code == MEAN:
        _mean(steps, g, refuse, inputs, x, out, src, dst)
    else:
        _lut(steps, g, src, dst, _unary(refuse, code, x, out, opts, d))


def _lut(steps, g, src, dst, table):
    if g.kernels is VIPER:
        steps += (VIPER.lut, (src, dst, table, len(dst)))
    else:
        steps += (k.lut, (src, dst, table))


def _binary(steps, g, refuse, code, inputs, x, out, opts, dst):
    if len(inputs) != 2:
        raise refuse("needs 2 inputs")
    y = tensor(g, inputs[1])
    _int8(refuse, y)
    if len(x[0]) > len(out[0]) or len(y[0]) > len(out[0]):
        raise refuse("an input has more dimensions than the output")
    p = _broadcast(refuse, x[0], y[0], out[0])
    # AddOptions, SubOptions and MulOptions all hold the fused activation in field 0.
    lo, hi = _clamp(refuse, scalar(g.data, opts, 0, "<b"), out)
    a, b = _operand(g, inputs[0]), _operand(g, inputs[1])
    zp = _zp(out)
    if code == MUL:
        # double(s1) * double(s2) / double(out): the product of two float32 is exact in double.
        m, shift = multiplier(x[4][0], y[4][0], out[4][0], True)
        ls, rs = _shifts(shift)
        tail = [-_zp(x), -_zp(y), m, ls, rs, zp, lo, hi]
        kernel = k.mul
    else:
        # TFLM's CalculateOpDataAdd (SUB's is the same): both inputs are brought to twice the
        # larger input scale with 20 bits of headroom, summed, and scaled to the output.
        big = max(x[4][0], y[4][0])   # float32 bits of positive floats order as the floats do
        tables = []
        for t in (x, y):
            m, shift = _ratio(t[4][0], 0, big, 1)
            offset = -_zp(t)
            # int32 over a bytearray: no 256-element list on the way (2 KB on a 64-bit port).
            table = int32(bytearray(1024))
            for raw in range(256):
                table[raw] = mbqm(((raw ^ 0x80) - 0x80 + offset) << 20, m, shift)
            tables.append(table)
        m, shift = _ratio(big, 1, out[4][0], 20)
        ls, rs = _shifts(shift)
        tail = tables + [-1 if code == SUB else 1, m, ls, rs, zp, lo, hi]
        kernel = k.add
    # An operand that is one constant value (x * 4.0, a scalar bias) makes the op a function of
    # the other's byte alone: tabulated by running the pure kernel over all 256 bytes.
    scalar_b = x[2] == out[2] and y[2] == 1 and tensor(g, inputs[1])[3] is not None
    if scalar_b or (y[2] == out[2] and x[2] == 1 and tensor(g, inputs[0])[3] is not None):
        every, table = bytearray(range(256)), bytearray(256)
        if scalar_b:
            kernel(every, b, table, [1, 1, 1, 256, 0, 0, 0, 1, 0, 0, 0, 0] + tail)
        else:
            kernel(a, every, table, [1, 1, 1, 256, 0, 0, 0, 0, 0, 0, 0, 1] + tail)
        _lut(steps, g, a if scalar_b else b, dst, table)
        return
    if g.kernels is not VIPER:
        steps += (kernel, (a, b, dst, p + tail))
        return

    def f(v):
        # The kernels' last step, from the sum or product.
        v = k.scale(v, m, ls, rs) + zp
        return lo if v < lo else (hi if v > hi else v)

    if code == MUL:
        # Each input plus its offset lies in -255..255; the product's range is from the corners.
        ra = (-128 + tail[0], 127 + tail[0])
        rb = (-128 + tail[1], 127 + tail[1])
        corners = [u * v for u in ra for v in rb]
        low, top = min(corners), max(corners)
        head = [1, tail[0] + 256, tail[1] + 256, -low]
    else:
        # The second input enters the sum as sign * its table value (sign -1 for SUB).
        ta, tb, sign = tail[0], tail[1], tail[2]
        low_a, top_a = _extreme(ta, -1), _extreme(ta, 1)
        low_b, top_b = sorted((sign * _extreme(tb, -1), sign * _extreme(tb, 1)))
        low, top = low_a + low_b, top_a + top_b
        head = [0, 256, 256, 0]
    if top - low >= (1 << 31) - 1:
        steps += (kernel, (a, b, dst, p + tail))   # a sum that would not fit an int32 (never seen)
        return
    # The tables, in place (the pure kernel is not used), and the thresholds are on
    # x = value - low, from 0 to top - low.
    if code != MUL:
        for raw in range(256):
            ta[raw] -= low_a
            tb[raw] = sign * tb[raw] - low_b
    buf = bytearray(4 * (17 + 256))
    params = int32(buf)
    for i in range(12):
        params[i] = p[i]
    for i in range(4):
        params[12 + i] = head[i]
    # Where the requantization steps: (y - zp - 1/2) * 2**(31 - shift) / m, less the bias.
    scale = 2.0 ** (31 + rs - ls) / m
    params[16] = _thresholds(params, 17, lambda v: f(v + low), top - low,
                             lambda level: int((level - zp - 0.5) * scale) - low)
    blocks = (buf, buf, buf) if code == MUL else (buf, ta, tb)
    steps += (VIPER.elementwise, (a, b, dst, blocks))


def _extreme(table, sign):
    """The least (sign -1) or greatest (sign 1) of 256 values."""
    e = table[0]
    for i in range(256):
        if (table[i] - e) * sign > 0:
            e = table[i]
    return e


def _thresholds(view, at, f, top, guess):
    """For a non-decreasing f (int8 results) over 0..top: writes into view from `at` the 255
    smallest x at which f reaches each level above f(0), in order, padded with top + 1 (never
    reached), and returns f(0) + 128. f(x) is then f(0) plus how many are <= x. guess(level)
    estimates where f reaches level; it only saves evaluations."""
    start = f(0)
    x = 0
    n = 0
    for level in range(start + 1, f(top) + 1):
        x = _first(f, level, x, top, guess(level))
        view[at + n] = x
        n += 1
    while n < 256:
        view[at + n] = top + 1
        n += 1
    return start + 128


def _first(f, level, lo, hi, guess):
    """The smallest x in lo..hi with f(x) >= level (f(hi) >= level): a bracket grown from the
    guess, then halved."""
    g = min(max(guess, lo), hi)
    step = 1
    if f(g) >= level:
        hi = g
        while g - step >= lo and f(g - step) >= level:
            hi = g - step
            step <<= 1
        lo = max(lo, g - step + 1)
    else:
        lo = g + 1
        while g + step < hi and f(g + step) < level:
            lo = g + step + 1
            step <<= 1
        hi = min(hi, g + step)
    while lo < hi:
        mid = (lo + hi) >> 1
        if f(mid) >= level:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _quantize_params(p):
    """kernels_viper.quantize's parameters for the pure kernel's p: thresholds on the magnitude
    bits of positive and of negative floats, found by running the pure kernel on single values."""
    s, zp = p[1], p[2]
    one = bytearray(4)
    q = (k.float_view(one), s, zp, p[3])
    out = bytearray(1)

    def f(bits):
        struct.pack_into("I", one, 0, bits)
        k.quantize(None, out, q)
        return (out[0] ^ 0x80) - 0x80

    def bits_of(v):
        return struct.unpack("I", struct.pack("f", min(max(v, 0.0), 1e38)))[0]

    inf = 0x7F800000
    buf = bytearray(4 * (5 + 512))
    params = int32(buf)
    params[0] = 0x7FFFFFFF
    params[1] = inf
    params[2] = f(0x7FC00000) + 128
    params[3] = _thresholds(params, 5, f, inf, lambda level: bits_of((level - zp - 0.5) * s))
    # Negative floats: the result falls as the magnitude grows, so the thresholds are those of
    # its negation, and the kernel subtracts the count.
    params[4] = 256 - _thresholds(params, 261, lambda bits: -f(bits | 0x80000000), inf,
                                  lambda level: bits_of((level + zp - 0.5) * s))
    return buf


def _concat(steps, g, refuse, inputs, out, opts, dst):
    # ConcatenationOptions: axis, fused activation (TFLM accepts none).
    if scalar(g.data, opts, 1, "<b"):
        raise refuse("fused activation")
    rank = len(out[0])
    axis = scalar(g.data, opts, 0, "<i")
    if axis < 0:
        axis += rank
    if not 0 <= axis < rank:
        raise refuse("axis %d of %d dimensions" % (axis, rank))
    outer = 1
    for n in out[0][:axis]:
        outer *= n
    sizes, srcs = [], []
    for t in inputs:
        fields = tensor(g, t)
        _int8(refuse, fields)
        if len(fields[0]) != rank or fields[0][:axis] != out[0][:axis] or fields[0][axis + 1:] != out[0][axis + 1:]:
            raise refuse("input shape %s does not concatenate into %s" % (fields[0], out[0]))
        sizes.append(fields[2] // outer)
        srcs.append(_operand(g, t))
    if sum(sizes) * outer != out[2]:
        raise refuse("inputs do not fill the output")
    if g.kernels is not VIPER:
        steps += (k.concat, (srcs, dst, [outer] + sizes))
        return
    first = 0
    for i in range(len(srcs)):
        steps += (VIPER.copy_rows, (srcs[i], dst, loader._pack([outer, sizes[i], sum(sizes), first])))
        first += sizes[i]


def _pad(steps, g, refuse, inputs, x, out, src, dst):
    if len(inputs) != 2:
        raise refuse("needs 2 inputs (PADV2's constant is not handled)")
    paddings = _ints(g, refuse, inputs[1], "paddings")
    rank = len(x[0])
    if len(paddings) != 2 * rank:
        raise refuse("paddings do not match the input's %d dimensions" % rank)
    ins = _dims4(refuse, x[0])
    before = [0] * (4 - rank) + [paddings[2 * i] for i in range(rank)]
    after = [0] * (4 - rank) + [paddings[2 * i + 1] for i in range(rank)]
    outs = [ins[i] + before[i] + after[i] for i in range(4)]
    if min(before + after) < 0 or outs != _dims4(refuse, out[0]):
        raise refuse("paddings %s do not give the output shape %s" % (paddings, out[0]))
    # TFLM pads an int8 PAD with the output zero point.
    steps += (k.pad, (src, dst, ins + outs[1:] + before + [_zp(out) & 0xFF]))


def _mean(steps, g, refuse, inputs, x, out, src, dst):
    rank = len(x[0])
    axes = []
    for a in _ints(g, refuse, inputs[1], "the axis"):
        a = a + rank if a < 0 else a
        if not 0 <= a < rank:
            raise refuse("axis out of range")
        if a not in axes:
            axes.append(a)
    ins = _dims4(refuse, x[0])
    reduced = [i - (4 - rank) in axes for i in range(4)]
    strides = [0, 0, 0, 0]
    step = 1
    count = 1
    for i in (3, 2, 1, 0):
        if reduced[i]:
            count *= ins[i]
        else:
            strides[i] = step
            step *= ins[i]
    if step != out[2]:
        raise refuse("output shape %s is not the input's without the reduced axes" % out[0])
    # TFLM's QuantizedMeanOrSum: QuantizeMultiplier(in / out), then 1/count folded into it.
    m, shift = _ratio(x[4][0], 0, out[4][0], 0)
    n = loader.bit_length(count) - 1
    n = min(n, 32, 31 + shift)
    m = (m << n) // count
    shift -= n
    ls, rs = _shifts(shift)
    bias, zp = _zp(x) * count, _zp(out)
    if g.kernels is not VIPER:
        steps += (k.mean, (src, dst, ins + strides + [[0] * out[2], bias, m, ls, rs, zp]))
        return

    def f(v):
        # The pure kernel's last step, on the sum of value + 128 that the viper kernel makes.
        v = k.scale(v - 128 * count - bias, m, ls, rs) + zp
        return -128 if v < -128 else (127 if v > 127 else v)

    buf = bytearray(4 * (10 + 256))
    params = int32(buf)
    for i in range(8):
        params[i] = (ins + strides)[i]
    params[8] = out[2]
    scale = 2.0 ** (31 + rs - ls) / m
    params[9] = _thresholds(params, 10, f, 255 * count,
                            lambda level: int((level - zp - 0.5) * scale) + 128 * count + bias)
    steps += (VIPER.mean, (src, dst, buf, bytearray(4 * out[2])))


def _activation_fn(refuse, code, x, out, opts, d):
    in_zp, out_zp = _zp(x), _zp(out)
    if code == QUANTIZE:
        # TFLM's Requantize: MultiplyByQuantizedMultiplier(v - in zp, double(in) / double(out)).
        m, shift = _ratio(x[4][0], 0, out[4][0], 0)
        return lambda v: mbqm(v - in_zp, m, shift) + out_zp
    if code == LEAKY_RELU:
        alpha = scalar(d, opts, 0, "<I")
        if alpha >> 31:
            raise refuse("negative alpha")
        mi, ei = f32_parts(x[4][0])
        mo, eo = f32_parts(out[4][0])
        ma, ea = f32_parts(alpha)
        # float32(float32(in * alpha) / out) and float32(in / out), then QuantizeMultiplier.
        if ma:
            p, ep = _f32(mi * ma, 1)
            q, eq = _f32(p, mo)
            m_alpha, s_alpha = quantize_multiplier(q, eq + ep + ei + ea - eo)
        else:
            m_alpha, s_alpha = 0, 0
        q, eq = _f32(mi, mo)
        m_id, s_id = quantize_multiplier(q, eq + ei - eo)
        return lambda v: out_zp + (mbqm(v - in_zp, m_id, s_id) if v >= in_zp else mbqm(v - in_zp, m_alpha, s_alpha))
    if code in (LOGISTIC, TANH):
        return _sigmoid_fn(refuse, code, x, out, in_zp)
    if code == HARD_SWISH:
        return _hard_swish_fn(refuse, x, out, in_zp, out_zp)
    raise refuse("no kernel")


def _unary(refuse, code, x, out, opts, d):
    return _table(refuse, _activation_fn(refuse, code, x, out, opts, d))


# ---- LOGISTIC and TANH: TFLM's int8 kernels, gemmlowp fixed point on a Q4.27 input ----

# exp(-2**k) in Q0.31 for k = -2..3, tested at bit 27 + k of a Q4.27 remainder (gemmlowp's
# barrel shifter for 4 integer bits; quant.py has the Q5.26 one softmax uses).
_EXP_BARREL_Q4 = ((25, 1672461947), (26, 1302514674), (27, 790015084), (28, 290630308),
                  (29, 39332535), (30, 720401))


def _exp_q4(a):
    """gemmlowp exp_on_negative_values for a <= 0 in Q4.27; result in Q0.31."""
    if a == 0:
        return INT32_MAX
    quarter = 1 << 25
    a_mod = (a & (quarter - 1)) - quarter
    result = _exp_on_interval(saturating_shift_left(a_mod, 4))
    remainder = wrap32(a_mod - a)
    for bit, mult in _EXP_BARREL_Q4:
        if remainder & (1 << bit):
            result = srdhm(result, mult)
    return result


def _one_minus_x_over_one_plus_x(a):
    """(1 - a) / (1 + a) for a in (0, 1), Q0.31: gemmlowp's Newton-Raphson in Q2.29."""
    total = a + INT32_MAX
    half = (total + 1) >> 1 if total >= 0 else -((-(total - 1)) >> 1)
    x = wrap32(1515870810 + srdhm(half, -1010580540))
    for _ in range(3):
        one_minus = wrap32((1 << 29) - srdhm(half, x))
        x = wrap32(x + saturating_shift_left(srdhm(x, one_minus), 2))
    return saturating_shift_left(wrap32(x - (1 << 29)), 2)


def _logistic_q4(a):
    if a == 0:
        return 1 << 30
    r = _one_over_one_plus_x(_exp_q4(-a if a > 0 else a))
    return r if a > 0 else wrap32(INT32_MAX - r)


def _tanh_q4(a):
    if a == 0:
        return 0
    # tanh(|a|) = (1 - exp(-2|a|)) / (1 + exp(-2|a|)); doubling the Q4.27 value is reading its
    # raw bits as Q5.26, the format quant.exp_on_negative_values takes.
    t = _one_minus_x_over_one_plus_x(exp_on_negative_values(a if a < 0 else -a))
    return -t if a < 0 else t


def _sigmoid_fn(refuse, code, x, out, in_zp):
    if code == LOGISTIC and _zp(out) != -128:
        raise refuse("output zero point must be -128")
    # frexp(double(scale) * 2**27): the Q31 multiplier and left shift into Q4.27.
    ms, es = f32_parts(x[4][0])
    m, shift = quantize_multiplier(ms, es + 27)
    if shift < 0:
        raise refuse("input scale below 2**-28")
    radius = (15 << 27) >> shift   # CalculateInputRadius(4, shift, 31)
    fn, down, zp = (_logistic_q4, 23, -128) if code == LOGISTIC else (_tanh_q4, 24, 0)

    def f(v):
        v -= in_zp
        if v <= -radius:
            return -128
        if v >= radius:
            return 127
        return rounding_divide_by_pot(fn(mbqm(v, m, shift)), down) + zp
    return f


# ---- HARD_SWISH: TFLM's int16 fixed-point reference ----

def _wrap16(v):
    v &= 0xFFFF
    return v - 0x10000 if v & 0x8000 else v


def _trunc_div(a, b):
    q = abs(a) // b
    return q if a >= 0 else -q


def _srdhm16(a, b):
    if a == b == -32768:
        return 32767
    ab = a * b
    return _wrap16(_trunc_div(ab + ((1 << 14) if ab >= 0 else 1 - (1 << 14)), 1 << 15))


def _sdhm16(a, b):
    # hard_swish.h's SaturatingDoublingHighMul: no rounding nudge.
    if a == b == -32768:
        return 32767
    return _wrap16(_trunc_div(a * b, 1 << 15))


def _saturating_left16(v, amount):
    v <<= amount
    return -32768 if v < -32768 else (32767 if v > 32767 else v)


def _down16(m):
    """DownScaleInt32ToInt16Multiplier."""
    if m >= INT32_MAX - (1 << 15):
        return 32767
    return (m + (1 << 15)) >> 16


def _hard_swish_fn(refuse, x, out, in_zp, out_zp):
    mi, ei = f32_parts(x[4][0])
    mo, eo = f32_parts(out[4][0])
    # hires input scale = scale / 128 (exact); float32(hires / out) and float32(hires / (3 / 32768)).
    q, e = _f32(mi, mo)
    out_m, out_shift = quantize_multiplier(q, e + ei - 7 - eo)
    if out_shift > 0:
        raise refuse("output scale below the input's / 128")
    q, e = _f32(mi, 3)
    relu_m, relu_shift = quantize_multiplier(q, e + ei - 7 + 15)
    out_m, relu_m = _down16(out_m), _down16(relu_m)

    def f(v):
        hires = _wrap16((v - in_zp) * 128)
        pre_out = _srdhm16(hires, out_m)
        r = hires
        if relu_shift > 0:
            r = _saturating_left16(r, relu_shift - 1)
        r = _srdhm16(r, relu_m)
        if relu_shift > 0:
            r = _saturating_left16(r, 1)
        if relu_shift < 0:
            r = rounding_divide_by_pot(r, -relu_shift)
        r = (r + (1 << 15)) >> 1
        return _wrap16(rounding_divide_by_pot(_sdhm16(r, pre_out), -out_shift) + out_zp)
    return f
