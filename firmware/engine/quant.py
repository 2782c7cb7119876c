# Integer arithmetic that must match TFLM's reference kernels bit for bit.
#
# This module holds what runs on every inference; the load-time derivations (multipliers,
# clamp ranges) are in loader.py.
#
# Requantization: TFLM (built without TFLITE_SINGLE_ROUNDING, as the PyPI wheel is) scales an
# int32 accumulator by a Q31 multiplier in two roundings: a saturating rounding doubling high
# multiply, then a rounding right shift that rounds halves away from zero.
#
# SOFTMAX (int8 -> int8) as TFLM's reference kernel computes it: gemmlowp fixed-point exp of the
# (rescaled) differences to the row maximum, a fixed-point reciprocal of their sum, and a
# rounding shift into the int8 output whose scale is 1/256 and zero point -128.
#
# Tensors are raw bytes holding int8 values, as the arena holds them, read as (v ^ 0x80) - 0x80
# and written masked to a byte: the viper kernel set then needs no signed views for softmax.

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul for int32 a, b."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    if ab >= 0:
        return (ab + (1 << 30)) >> 31
    # C integer division truncates toward zero; Python's >> floors, so negate around it.
    return -((-(ab + 1 - (1 << 30))) >> 31)


def rounding_divide_by_pot(x, exponent):
    if exponent <= 0:
        return x
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def saturating_shift_left(x, exponent):
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return x << exponent


def bit_length(n):
    """int.bit_length(), which MicroPython's int lacks."""
    if n < 0:
        n = -n
    bits = 0
    while n >= 0x100000000:
        n >>= 32
        bits += 32
    while n:
        n >>= 1
        bits += 1
    return bits


def wrap32(x):
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


# ---- SOFTMAX ----

SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12

# exp(-2**k) in Q0.31 for k = -2..4, the factors of gemmlowp's exp barrel shifter.
_EXP_BARREL = ((24, 1672461947), (25, 1302514674), (26, 790015084), (27, 290630308),
               (28, 39332535), (29, 720401), (30, 242))


def _exp_on_interval(a):
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: Taylor expansion around -1/8."""
    x = wrap32(a + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(srdhm(wrap32(x4_over_4 + x3), 715827883) + x2, 1)
    poly = wrap32(poly)
    return wrap32(1895147668 + srdhm(1895147668, wrap32(x + poly)))


def exp_on_negative_values(a):
    """exp(a) for a <= 0 given in Q5.26; result in Q0.31."""
    quarter = 1 << 24
    a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter
    result = _exp_on_interval(saturating_shift_left(a_mod_quarter_minus_quarter, 5))
    remainder = a_mod_quarter_minus_quarter - a
    for bit, multiplier in _EXP_BARREL:
        if remainder & (1 << bit):
            result = srdhm(result, multiplier)
    if a == 0:
        return INT32_MAX
    return result


def _one_over_one_plus_x(a):
    """1 / (1 + a) for a in [0, 1), Q0.31 in and out, by Newton-Raphson in Q2.29."""
    total = a + INT32_MAX
    half_denominator = (total + 1) >> 1 if total >= 0 else -((-(total - 1)) >> 1)
    x = wrap32(1515870810 + srdhm(half_denominator, -1010580540))
    for _ in range(3):
        one_minus = wrap32((1 << 29) - srdhm(half_denominator, x))
        x = wrap32(x + saturating_shift_left(srdhm(x, one_minus), 2))
    return saturating_shift_left(x, 1)


def reciprocal(x, headroom_plus_one):
    """GetReciprocal's Q0.31 scale for a positive fixed-point sum x with the given count of
    leading zero bits; the caller derives the bits over unit from the same count (returning
    both would allocate a tuple per inference)."""
    return _one_over_one_plus_x(wrap32((x << headroom_plus_one) - (1 << 31)))


def softmax_int8(src, dst, rows, depth, multiplier, shift, diff_min, exps):
    """src, dst: bytes of rows * depth int8 values; exps: a list of depth ints (scratch,
    preallocated so an inference does not allocate)."""
    for r in range(rows):
        base = r * depth
        max_in_row = -128
        for c in range(depth):
            v = (src[base + c] ^ 0x80) - 0x80
            if v > max_in_row:
                max_in_row = v
        sum_of_exps = 0
        for c in range(depth):
            diff = (src[base + c] ^ 0x80) - 0x80 - max_in_row
            if diff >= diff_min:
                e = exp_on_negative_values(srdhm(diff << shift, multiplier))
                exps[c] = e
                sum_of_exps = wrap32(sum_of_exps + rounding_divide_by_pot(e, ACCUMULATION_INTEGER_BITS))
            else:
                exps[c] = -1  # below diff_min: TFLM outputs the minimum without an exp
        headroom_plus_one = 32 - bit_length(sum_of_exps)
        scale = reciprocal(sum_of_exps, headroom_plus_one)
        bits_over_unit = ACCUMULATION_INTEGER_BITS - headroom_plus_one
        for c in range(depth):
            e = exps[c]
            if e < 0:
                dst[base + c] = 0x80  # -128
                continue
            out = rounding_divide_by_pot(srdhm(scale, e), bits_over_unit + 31 - 8) - 128
            dst[base + c] = (-128 if out < -128 else (127 if out > 127 else out)) & 0xFF


def requantize(acc, dst, q, n):
    """dst[i] = clamp(MultiplyByQuantizedMultiplier(acc[i]) + zero point), the per-channel
    parameters packed in int32 q as for kernels_viper.requantize_64bit (channel = i % channels,
    NHWC). Multipliers are positive, so SaturatingRoundingDoublingHighMul can never see
    INT32_MIN * INT32_MIN and its saturation branch is left out."""
    channels = q[0]
    zp, lo, hi = q[1] - 128, q[2] - 128, q[3] - 128
    c = 0
    for i in range(n):
        ab = (acc[i] << q[5 + 3 * c]) * q[4 + 3 * c]
        if ab >= 0:
            x = (ab + 0x40000000) >> 31
        else:
            # C division truncates toward zero, Python's shift floors: negate around it.
            x = -((0x3FFFFFFF - ab) >> 31)
        rs = q[6 + 3 * c]
        if rs:
            mask = (1 << rs) - 1
            threshold = mask >> 1
            if x < 0:
                threshold += 1
            rem = x & mask
            x >>= rs
            if rem > threshold:
                x += 1
        x += zp
        dst[i] = lo if x < lo else (hi if x > hi else x)
        c += 1
        if c == channels:
            c = 0
