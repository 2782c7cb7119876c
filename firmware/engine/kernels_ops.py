# Run-time kernels for the elementwise, shape and conversion ops (ADD, SUB, MUL, CONCATENATION,
# PAD, MEAN, QUANTIZE, DEQUANTIZE and the table-driven activations), bit-exact with TFLM's
# reference kernels. prepare_ops.py derives their parameters at load time.
#
# Imported only by a model that uses one of these ops, so a model without them pays nothing.
# Tensors are the arena's raw bytes holding int8 values, read as (v ^ 0x80) - 0x80 and written
# masked to a byte. With the viper kernel set, PAD still runs here; the others have
# viper versions in kernels_viper.py, whose parameters prepare_ops derives from these kernels.
# Shapes are padded on the left to 4 dimensions; a broadcast dimension has stride 0.
try:
    import uctypes
except ImportError:
    uctypes = None


def float_view(buf):
    """float32 view of a bytes buffer without a copy (memoryview.cast in CPython, uctypes on a board)."""
    if uctypes is None:
        return memoryview(buf).cast("f")
    return uctypes.struct(uctypes.addressof(buf), (uctypes.ARRAY, uctypes.FLOAT32 | (len(buf) // 4)),
                          uctypes.NATIVE)


def scale(x, m, ls, rs):
    """TFLM MultiplyByQuantizedMultiplier(x, m, shift) with ls = max(shift, 0), rs = max(-shift, 0),
    for a positive Q31 multiplier m (so the high multiply never saturates)."""
    ab = (x << ls) * m
    if ab >= 0:
        x = (ab + 0x40000000) >> 31
    else:
        # C division truncates toward zero; Python's shift floors: negate around it.
        x = -((0x3FFFFFFF - ab) >> 31)
    if rs:
        mask = (1 << rs) - 1
        rem = x & mask
        threshold = (mask >> 1) + (1 if x < 0 else 0)
        x >>= rs
        if rem > threshold:
            x += 1
    return x


def lut(src, dst, table):
    """dst[i] = table[src[i]]: any int8 -> int8 function of one value, tabulated at load."""
    for i in range(len(dst)):
        dst[i] = table[src[i]]


def add(a, b, dst, p):
    """ADD/SUB: p = [d0, d1, d2, d3, a strides (4), b strides (4), table a, table b, sign of b,
    output multiplier, left shift, right shift, output zero point, lo, hi]. The tables hold each
    input's value already offset, shifted left by 20 and scaled (TFLM's scaled_inputN_val)."""
    ta, tb, sign = p[12], p[13], p[14]
    m, ls, rs, zp, lo, hi = p[15], p[16], p[17], p[18], p[19], p[20]
    sa3, sb3 = p[7], p[11]
    n = 0
    for i0 in range(p[0]):
        for i1 in range(p[1]):
            for i2 in range(p[2]):
                ia = i0 * p[4] + i1 * p[5] + i2 * p[6]
                ib = i0 * p[8] + i1 * p[9] + i2 * p[10]
                for _ in range(p[3]):
                    x = scale(ta[a[ia]] + sign * tb[b[ib]], m, ls, rs) + zp
                    dst[n] = (lo if x < lo else (hi if x > hi else x)) & 0xFF
                    n += 1
                    ia += sa3
                    ib += sb3


def mul(a, b, dst, p):
    """MUL: p = [d0, d1, d2, d3, a strides (4), b strides (4), a offset, b offset, multiplier,
    left shift, right shift, output zero point, lo, hi]."""
    oa, ob, m, ls, rs, zp, lo, hi = p[12], p[13], p[14], p[15], p[16], p[17], p[18], p[19]
    sa3, sb3 = p[7], p[11]
    n = 0
    for i0 in range(p[0]):
        for i1 in range(p[1]):
            for i2 in range(p[2]):
                ia = i0 * p[4] + i1 * p[5] + i2 * p[6]
                ib = i0 * p[8] + i1 * p[9] + i2 * p[10]
                for _ in range(p[3]):
                    x = scale(((a[ia] ^ 0x80) - 0x80 + oa) * ((b[ib] ^ 0x80) - 0x80 + ob), m, ls, rs) + zp
                    dst[n] = (lo if x < lo else (hi if x > hi else x)) & 0xFF
                    n += 1
                    ia += sa3
                    ib += sb3


def concat(srcs, dst, p):
    """CONCATENATION: p = [outer count, bytes per outer step of each input...]. TFLM copies the
    bytes as they are (the converter gives every input the output's quantization)."""
    n = 0
    for o in range(p[0]):
        for k in range(len(srcs)):
            size = p[1 + k]
            start = o * size
            dst[n:n + size] = srcs[k][start:start + size]
            n += size


def pad(src, dst, p):
    """PAD: p = [in d0, d1, d2, d3, out d1, d2, d3, before 0, 1, 2, 3, pad byte]: every output
    byte gets the pad value (the output zero point), then the input's rows are copied in."""
    value = p[11]
    for i in range(len(dst)):
        dst[i] = value
    row = p[3]
    n = 0
    for i0 in range(p[0]):
        for i1 in range(p[1]):
            for i2 in range(p[2]):
                o = (((i0 + p[7]) * p[4] + i1 + p[8]) * p[5] + i2 + p[9]) * p[6] + p[10]
                dst[o:o + row] = src[n:n + row]
                n += row


def mean(src, dst, p):
    """MEAN: p = [in d0, d1, d2, d3, output strides (4, 0 on reduced dims), sums (a list, one
    per output value), count * input zero point, multiplier, left shift, right shift, output
    zero point]: TFLM's QuantizedMeanOrSum with the 1/count folded into the multiplier."""
    sums = p[8]
    for i in range(len(sums)):
        sums[i] = 0
    s3 = p[7]
    n = 0
    for i0 in range(p[0]):
        for i1 in range(p[1]):
            for i2 in range(p[2]):
                o = i0 * p[4] + i1 * p[5] + i2 * p[6]
                for _ in range(p[3]):
                    sums[o] += (src[n] ^ 0x80) - 0x80
                    n += 1
                    o += s3
    bias, m, ls, rs, zp = p[9], p[10], p[11], p[12], p[13]
    for i in range(len(sums)):
        x = scale(sums[i] - bias, m, ls, rs) + zp
        dst[i] = (-128 if x < -128 else (127 if x > 127 else x)) & 0xFF


def quantize(src, dst, p):
    """QUANTIZE float32 -> int8: p = [float32 view of the input, the output scale as a float,
    zero point, a 1-float scratch array]. TFLM computes round(val / scale) in float32, halves
    away from zero; storing the quotient into a float32 array rounds it as float32 division
    would (a double quotient rounded to float32 is the correctly rounded float32 quotient)."""
    values, s, zp, f32 = p[0], p[1], p[2], p[3]
    for i in range(len(dst)):
        f32[0] = values[i] / s
        q = f32[0]
        if q != q:
            t = 0   # NaN: TFLM's conversion is undefined; 0 keeps it in range
        elif q > 1e6 or q < -1e6:
            t = 1000000 if q > 0 else -1000000
        else:
            t = int(q)
            frac = q - t
            if frac >= 0.5:
                t += 1
            elif frac <= -0.5:
                t -= 1
        t += zp
        dst[i] = (-128 if t < -128 else (127 if t > 127 else t)) & 0xFF


def dequantize(src, dst, table):
    """DEQUANTIZE int8 -> float32: dst is a float32 view, table a float32 array of the 256
    possible results, indexed by the raw byte."""
    for i in range(len(src)):
        dst[i] = table[src[i]]
