# Portable int8 kernels: plain Python over signed int8 views, bit-exact with TFLM's reference
# kernels. Every kernel writes int32 accumulators (bias included) into `acc`; requantize() then
# scales them into the int8 output. The same requantize() serves the viper kernels.


def requantize(acc, n, channels, mults, lshifts, rshifts, out_zp, lo, hi, dst):
    """dst[i] = clamp(MultiplyByQuantizedMultiplier(acc[i]) + out_zp) with per-channel params
    (channel = i % channels, NHWC). Multipliers are positive, so SaturatingRoundingDoublingHighMul
    can never see INT32_MIN * INT32_MIN and its saturation branch is left out."""
    c = 0
    for i in range(n):
        ab = (acc[i] << lshifts[c]) * mults[c]
        if ab >= 0:
            x = (ab + 0x40000000) >> 31
        else:
            # C division truncates toward zero, Python's shift floors: negate around it.
            x = -((0x3FFFFFFF - ab) >> 31)
        rs = rshifts[c]
        if rs:
            mask = (1 << rs) - 1
            threshold = mask >> 1
            if x < 0:
                threshold += 1
            rem = x & mask
            x >>= rs
            if rem > threshold:
                x += 1
        x += out_zp
        dst[i] = lo if x < lo else (hi if x > hi else x)
        c += 1
        if c == channels:
            c = 0


def fully_connected(x, w, acc, depth, units, in_off, bias):
    # sum((x + in_off) * w) + b == sum(x * w) + (b + in_off * sum(w)); `bias` is already folded.
    base = 0
    for o in range(units):
        s = bias[o]
        for i in range(depth):
            s += x[i] * w[base + i]
        acc[o] = s
        base += depth


def conv2d(x, w, acc, g, bias):
    in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, s_h, s_w, p_h, p_w, d_h, d_w, in_off = g
    n = 0
    for oy in range(out_h):
        y0 = oy * s_h - p_h
        for ox in range(out_w):
            x0 = ox * s_w - p_w
            for oc in range(out_c):
                s = bias[oc]
                for ky in range(k_h):
                    iy = y0 + ky * d_h
                    if iy < 0 or iy >= in_h:
                        continue
                    for kx in range(k_w):
                        ix = x0 + kx * d_w
                        if ix < 0 or ix >= in_w:
                            continue
                        xb = (iy * in_w + ix) * in_c
                        wb = ((oc * k_h + ky) * k_w + kx) * in_c
                        for ic in range(in_c):
                            s += (x[xb + ic] + in_off) * w[wb + ic]
                acc[n] = s
                n += 1


def depthwise_conv2d(x, w, acc, g, bias):
    in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, s_h, s_w, p_h, p_w, d_h, d_w, in_off = g
    mult = out_c // in_c
    n = 0
    for oy in range(out_h):
        y0 = oy * s_h - p_h
        for ox in range(out_w):
            x0 = ox * s_w - p_w
            for oc in range(out_c):
                ic = oc // mult
                s = bias[oc]
                for ky in range(k_h):
                    iy = y0 + ky * d_h
                    if iy < 0 or iy >= in_h:
                        continue
                    for kx in range(k_w):
                        ix = x0 + kx * d_w
                        if ix < 0 or ix >= in_w:
                            continue
                        s += (x[(iy * in_w + ix) * in_c + ic] + in_off) * w[(ky * k_w + kx) * out_c + oc]
                acc[n] = s
                n += 1


def max_pool(x, dst, g):
    in_h, in_w, ch, out_h, out_w, k_h, k_w, s_h, s_w, p_h, p_w, lo, hi = g
    n = 0
    for oy in range(out_h):
        y0 = oy * s_h - p_h
        for ox in range(out_w):
            x0 = ox * s_w - p_w
            for c in range(ch):
                m = -128
                for ky in range(k_h):
                    iy = y0 + ky
                    if iy < 0 or iy >= in_h:
                        continue
                    for kx in range(k_w):
                        ix = x0 + kx
                        if ix < 0 or ix >= in_w:
                            continue
                        v = x[(iy * in_w + ix) * ch + c]
                        if v > m:
                            m = v
                dst[n] = lo if m < lo else (hi if m > hi else m)
                n += 1


def average_pool(x, dst, g):
    in_h, in_w, ch, out_h, out_w, k_h, k_w, s_h, s_w, p_h, p_w, lo, hi = g
    n = 0
    for oy in range(out_h):
        y0 = oy * s_h - p_h
        for ox in range(out_w):
            x0 = ox * s_w - p_w
            for c in range(ch):
                s = 0
                count = 0
                for ky in range(k_h):
                    iy = y0 + ky
                    if iy < 0 or iy >= in_h:
                        continue
                    for kx in range(k_w):
                        ix = x0 + kx
                        if ix < 0 or ix >= in_w:
                            continue
                        s += x[(iy * in_w + ix) * ch + c]
                        count += 1
                # Rounds halves away from zero, as TFLM's (acc +- count/2) / count in C does.
                half = count // 2
                if s > 0:
                    v = (s + half) // count
                else:
                    v = -((half - s) // count)
                dst[n] = lo if v < lo else (hi if v > hi else v)
                n += 1
