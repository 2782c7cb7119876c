# int8 -> int8 SOFTMAX as TFLM's reference kernel computes it: gemmlowp fixed-point exp of the
# (rescaled) differences to the row maximum, a fixed-point reciprocal of their sum, and a
# rounding shift into the int8 output whose scale is 1/256 and zero point -128.
from .quant import (srdhm, rounding_divide_by_pot, saturating_shift_left, wrap32,
                    f32_parts, quantize_multiplier, bit_length, INT32_MAX)

SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12

# exp(-2**k) in Q0.31 for k = -2..4, the factors of gemmlowp's exp barrel shifter.
_EXP_BARREL = ((24, 1672461947), (25, 1302514674), (26, 790015084), (27, 290630308),
               (28, 39332535), (29, 720401), (30, 242))


def prepare(beta_bits, input_scale_bits):
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
    """src, dst: signed int8 sequences of rows * depth values; exps: a list of depth ints
    (scratch, preallocated so an inference does not allocate)."""
    for r in range(rows):
        base = r * depth
        max_in_row = -128
        for c in range(depth):
            v = src[base + c]
            if v > max_in_row:
                max_in_row = v
        sum_of_exps = 0
        for c in range(depth):
            diff = src[base + c] - max_in_row
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
                dst[base + c] = -128
                continue
            out = rounding_divide_by_pot(srdhm(scale, e), bits_over_unit + 31 - 8) - 128
            dst[base + c] = -128 if out < -128 else (127 if out > 127 else out)
