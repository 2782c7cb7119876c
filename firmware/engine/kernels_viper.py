# MicroPython viper versions of the accumulate loops (the multiply-accumulates dominate the
# run time), taking the same arguments as kernels_pure; requantization is quant.requantize on
# 32-bit ports and requantize_64bit below on 64-bit ones.
#
# Tensors arrive as raw bytes (ptr8) and are sign-extended with (v ^ 0x80) - 0x80. Parameters
# arrive packed in an int32 block (viper functions take at most four arguments). On 64-bit ports
# a ptr32 load zero-extends, so a negative parameter would read as a large positive one; the
# values that may be negative (input offset, biases) only enter sums and products, which are
# right modulo 2**32, and the accumulator store through ptr32 keeps exactly the low 32 bits, the
# int32 TFLM computes. Values that are compared (pool clamp bounds) are packed biased by +128.
import micropython


@micropython.viper
def fully_connected(x: ptr8, w: ptr8, acc: ptr32, p: ptr32):
    depth = p[0]
    units = p[1]
    base = 0
    o = 0
    while o < units:
        s = p[2 + o]
        i = 0
        while i < depth:
            s += ((x[i] ^ 0x80) - 0x80) * ((w[base + i] ^ 0x80) - 0x80)
            i += 1
        acc[o] = s
        base += depth
        o += 1


@micropython.viper
def conv2d(x: ptr8, w: ptr8, acc: ptr32, p: ptr32):
    in_h = p[0]
    in_w = p[1]
    in_c = p[2]
    out_h = p[3]
    out_w = p[4]
    out_c = p[5]
    k_h = p[6]
    k_w = p[7]
    s_h = p[8]
    s_w = p[9]
    p_h = p[10]
    p_w = p[11]
    d_h = p[12]
    d_w = p[13]
    in_off = p[14]
    n = 0
    oy = 0
    while oy < out_h:
        y0 = oy * s_h - p_h
        ox = 0
        while ox < out_w:
            x0 = ox * s_w - p_w
            oc = 0
            while oc < out_c:
                s = p[15 + oc]
                ky = 0
                while ky < k_h:
                    iy = y0 + ky * d_h
                    if iy >= 0 and iy < in_h:
                        kx = 0
                        while kx < k_w:
                            ix = x0 + kx * d_w
                            if ix >= 0 and ix < in_w:
                                xb = (iy * in_w + ix) * in_c
                                wb = ((oc * k_h + ky) * k_w + kx) * in_c
                                ic = 0
                                while ic < in_c:
                                    s += (((x[xb + ic] ^ 0x80) - 0x80) + in_off) * ((w[wb + ic] ^ 0x80) - 0x80)
                                    ic += 1
                            kx += 1
                    ky += 1
                acc[n] = s
                n += 1
                oc += 1
            ox += 1
        oy += 1


@micropython.viper
def depthwise_conv2d(x: ptr8, w: ptr8, acc: ptr32, p: ptr32):
    in_h = p[0]
    in_w = p[1]
    in_c = p[2]
    out_h = p[3]
    out_w = p[4]
    out_c = p[5]
    k_h = p[6]
    k_w = p[7]
    s_h = p[8]
    s_w = p[9]
    p_h = p[10]
    p_w = p[11]
    d_h = p[12]
    d_w = p[13]
    in_off = p[14]
    n = 0
    oy = 0
    while oy < out_h:
        y0 = oy * s_h - p_h
        ox = 0
        while ox < out_w:
            x0 = ox * s_w - p_w
            oc = 0
            ic = 0
            m = 0
            mult = 1
            while mult * in_c < out_c:
                mult += 1
            while oc < out_c:
                s = p[15 + oc]
                ky = 0
                while ky < k_h:
                    iy = y0 + ky * d_h
                    if iy >= 0 and iy < in_h:
                        kx = 0
                        while kx < k_w:
                            ix = x0 + kx * d_w
                            if ix >= 0 and ix < in_w:
                                xv = (x[(iy * in_w + ix) * in_c + ic] ^ 0x80) - 0x80
                                s += (xv + in_off) * ((w[(ky * k_w + kx) * out_c + oc] ^ 0x80) - 0x80)
                            kx += 1
                    ky += 1
                acc[n] = s
                n += 1
                oc += 1
                m += 1
                if m == mult:
                    m = 0
                    ic += 1
            ox += 1
        oy += 1


@micropython.viper
def max_pool(x: ptr8, dst: ptr8, p: ptr32):
    in_h = p[0]
    in_w = p[1]
    ch = p[2]
    out_h = p[3]
    out_w = p[4]
    k_h = p[5]
    k_w = p[6]
    s_h = p[7]
    s_w = p[8]
    p_h = p[9]
    p_w = p[10]
    lo = p[11]
    hi = p[12]
    n = 0
    oy = 0
    while oy < out_h:
        y0 = oy * s_h - p_h
        ox = 0
        while ox < out_w:
            x0 = ox * s_w - p_w
            c = 0
            while c < ch:
                # Values biased by +128 (0..255) compare like the int8 values they encode.
                m = 0
                ky = 0
                while ky < k_h:
                    iy = y0 + ky
                    if iy >= 0 and iy < in_h:
                        kx = 0
                        while kx < k_w:
                            ix = x0 + kx
                            if ix >= 0 and ix < in_w:
                                v = x[(iy * in_w + ix) * ch + c] ^ 0x80
                                if v > m:
                                    m = v
                            kx += 1
                    ky += 1
                if m < lo:
                    m = lo
                if m > hi:
                    m = hi
                dst[n] = m ^ 0x80
                n += 1
                c += 1
            ox += 1
        oy += 1


@micropython.viper
def average_pool(x: ptr8, dst: ptr8, p: ptr32):
    in_h = p[0]
    in_w = p[1]
    ch = p[2]
    out_h = p[3]
    out_w = p[4]
    k_h = p[5]
    k_w = p[6]
    s_h = p[7]
    s_w = p[8]
    p_h = p[9]
    p_w = p[10]
    lo = p[11]
    hi = p[12]
    n = 0
    oy = 0
    while oy < out_h:
        y0 = oy * s_h - p_h
        ox = 0
        while ox < out_w:
            x0 = ox * s_w - p_w
            c = 0
            while c < ch:
                s = 0
                count = 0
                ky = 0
                while ky < k_h:
                    iy = y0 + ky
                    if iy >= 0 and iy < in_h:
                        kx = 0
                        while kx < k_w:
                            ix = x0 + kx
                            if ix >= 0 and ix < in_w:
                                s += (x[(iy * in_w + ix) * ch + c] ^ 0x80) - 0x80
                                count += 1
                            kx += 1
                    ky += 1
                # Halves round away from zero, as TFLM's (acc +- count/2) / count in C; dividing
                # magnitudes makes viper's floor division truncate the way C's does.
                half = count >> 1
                if s > 0:
                    v = (s + half) // count
                else:
                    v = 0 - (half - s) // count
                v += 128
                if v < lo:
                    v = lo
                if v > hi:
                    v = hi
                dst[n] = v ^ 0x80
                n += 1
                c += 1
            ox += 1
        oy += 1



@micropython.viper
def requantize_64bit(acc: ptr32, dst: ptr8, q: ptr32, n: int):
    # quant.requantize for ports whose machine word is 64 bits, where the int32 x Q31
    # product fits a viper int. q: [channels, out_zp + 128, lo + 128, hi + 128, then
    # (multiplier, left shift, right shift) per channel]. 32-bit boards keep the Python version,
    # whose arbitrary-precision ints give the same results.
    channels = q[0]
    zp = q[1] - 128
    lo = q[2] - 128
    hi = q[3] - 128
    c = 0
    i = 0
    while i < n:
        # ptr32 loads zero-extend on 64-bit ports; shifting up and back sign-extends. Constants
        # stay below 2**30 so that mpy-cross, whose small ints are 31-bit, keeps them native.
        x = (acc[i] << 32) >> 32
        m = q[4 + 3 * c]
        ab = (x << q[5 + 3 * c]) * m
        if ab >= 0:
            x = (ab + 0x3FFFFFFF + 1) >> 31
        else:
            x = 0 - ((0x3FFFFFFF - ab) >> 31)
        rs = q[6 + 3 * c]
        if rs:
            mask = (1 << rs) - 1
            threshold = mask >> 1
            if x < 0:
                threshold += 1
            rem = x & mask
            x = x >> rs
            if rem > threshold:
                x += 1
        x += zp
        if x < lo:
            x = lo
        if x > hi:
            x = hi
        dst[i] = x & 0xFF
        c += 1
        if c == channels:
            c = 0
        i += 1


# ---- The elementwise and conversion ops (prepare_ops.py packs their parameters) ----
#
# Their int8 output is a monotone function of one integer (ADD/SUB's scaled sum, MUL's product,
# a float32's magnitude), so it is found by counting the thresholds at or below that integer,
# 255 of them sorted in a 256-entry table whose last entry is never reached: eight comparisons
# with no 64-bit multiply, so 32-bit ports run them too. prepare_ops derives the thresholds
# from the pure kernels' own arithmetic, which keeps them bit-exact by construction. Every
# packed value is a non-negative int32, so a ptr32 load reads the same whether the port
# sign-extends (32-bit) or zero-extends (64-bit) it, and ADD's two table values sum below 2**31.


@micropython.viper
def lut(src: ptr8, dst: ptr8, table: ptr8, n: int):
    # Any int8 -> int8 function of one value, tabulated at load (the activations, QUANTIZE
    # int8 -> int8, ADD/SUB/MUL with a constant scalar operand).
    i = 0
    while i < n:
        dst[i] = table[src[i]]
        i += 1


@micropython.viper
def lut32(src: ptr8, dst: ptr32, table: ptr32, n: int):
    # DEQUANTIZE: each byte's float32 result copied as its bits; viper never boxes a float.
    i = 0
    while i < n:
        dst[i] = table[src[i]]
        i += 1


@micropython.viper
def elementwise(a: ptr8, b: ptr8, dst: ptr8, blocks):
    # ADD, SUB and MUL. blocks: three int32 blocks, kept apart because a loading model's heap
    # may have no 3 KB hole. The first: [d0..d3 of the output, strides of a (4) and of b (4)
    # (0 where broadcast), mul, a offset + 256, b offset + 256, product bias, the output for
    # the smallest value + 128, 256 thresholds]; for ADD/SUB the others are 256-entry tables of
    # each input's scaled values (SUB's second negated), biased to be non-negative.
    p = ptr32(blocks[0])
    ta = ptr32(blocks[1])
    tb = ptr32(blocks[2])
    mul = p[12]
    oa = p[13] - 256
    ob = p[14] - 256
    bias = p[15]
    base = p[16]
    t = 17
    n = 0
    i0 = 0
    while i0 < p[0]:
        i1 = 0
        while i1 < p[1]:
            i2 = 0
            while i2 < p[2]:
                ia = i0 * p[4] + i1 * p[5] + i2 * p[6]
                ib = i0 * p[8] + i1 * p[9] + i2 * p[10]
                i3 = 0
                while i3 < p[3]:
                    if mul:
                        x = ((a[ia] ^ 0x80) - 0x80 + oa) * ((b[ib] ^ 0x80) - 0x80 + ob) + bias
                    else:
                        x = ta[a[ia]] + tb[b[ib]]
                    c = 0
                    step = 128
                    while step:
                        if p[t + c + step - 1] <= x:
                            c += step
                        step >>= 1
                    dst[n] = (base + c - 128) & 0xFF
                    n += 1
                    ia += p[7]
                    ib += p[11]
                    i3 += 1
                i2 += 1
            i1 += 1
        i0 += 1


@micropython.viper
def quantize(src: ptr32, dst: ptr8, p: ptr32, n: int):
    # QUANTIZE float32 -> int8 on the input's bits: the result rises with a positive float's
    # magnitude and falls with a negative one's. p: [0x7FFFFFFF, the bits of +inf, the output
    # for NaN + 128, for +0 + 128, for -0 + 128, 256 thresholds on the magnitude of positive
    # floats, then 256 for negative ones].
    mask = p[0]
    inf = p[1]
    i = 0
    while i < n:
        bits = src[i]
        mag = bits & mask
        if mag > inf:
            v = p[2]
        else:
            # Bit 31 is the sign whether the load sign- (32-bit) or zero-extends (64-bit).
            neg = (bits >> 31) & 1
            t = 5 + (neg << 8)
            c = 0
            step = 128
            while step:
                if p[t + c + step - 1] <= mag:
                    c += step
                step >>= 1
            if neg:
                v = p[4] - c
            else:
                v = p[3] + c
        dst[i] = (v - 128) & 0xFF
        i += 1


@micropython.viper
def copy_rows(src: ptr8, dst: ptr8, p: ptr32):
    # One CONCATENATION input: p = [rows, bytes per row, output bytes per row, first byte].
    # Slicing would allocate a memoryview per row.
    rows = p[0]
    size = p[1]
    o = p[3]
    n = 0
    r = 0
    while r < rows:
        i = 0
        while i < size:
            dst[o + i] = src[n]
            n += 1
            i += 1
        o += p[2]
        r += 1


@micropython.viper
def mean(src: ptr8, dst: ptr8, p: ptr32, sums: ptr32):
    # MEAN: p = [d0..d3 of the input, output strides (4, 0 on reduced dims), output count, the
    # output for a zero sum + 128, 256 thresholds]; sums: one int32 per output. Summing the
    # bytes ^ 0x80 (value + 128) keeps every sum non-negative.
    outs = p[8]
    i = 0
    while i < outs:
        sums[i] = 0
        i += 1
    n = 0
    i0 = 0
    while i0 < p[0]:
        i1 = 0
        while i1 < p[1]:
            i2 = 0
            while i2 < p[2]:
                o = i0 * p[4] + i1 * p[5] + i2 * p[6]
                i3 = 0
                while i3 < p[3]:
                    sums[o] += src[n] ^ 0x80
                    n += 1
                    o += p[7]
                    i3 += 1
                i2 += 1
            i1 += 1
        i0 += 1
    t = 10
    i = 0
    while i < outs:
        x = sums[i]
        c = 0
        step = 128
        while step:
            if p[t + c + step - 1] <= x:
                c += step
            step >>= 1
        dst[i] = (p[9] + c - 128) & 0xFF
        i += 1
