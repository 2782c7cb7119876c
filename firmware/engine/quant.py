# Integer arithmetic that must match TFLM's reference kernels bit for bit.
#
# Requantization: TFLM (built without TFLITE_SINGLE_ROUNDING, as the PyPI wheel is) scales an
# int32 accumulator by a Q31 multiplier in two roundings: a saturating rounding doubling high
# multiply, then a rounding right shift that rounds halves away from zero.
#
# Multipliers: TFLM derives them from float32 scales in double precision. They are derived here
# from the scales' raw float32 bits with exact integer arithmetic that reproduces each double
# rounding, so a board whose MicroPython floats are single precision still gets identical values.

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


def conv_multiplier(input_bits, filter_bits, output_bits):
    """Per-channel conv/depthwise: double(in) * double(filter) / double(out)."""
    mi, ei = f32_parts(input_bits)
    mf, ef = f32_parts(filter_bits)
    mo, eo = f32_parts(output_bits)
    d, e = round_ratio(mi * mf, mo, 53)
    return quantize_multiplier(d, e + ei + ef - eo)


def fc_multiplier(input_bits, filter_bits, output_bits):
    """Per-tensor fully connected: the in*filter product is rounded to float32 first."""
    mi, ei = f32_parts(input_bits)
    mf, ef = f32_parts(filter_bits)
    mo, eo = f32_parts(output_bits)
    p, ep = round_ratio(mi * mf, 1, 24)
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
