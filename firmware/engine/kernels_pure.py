# Portable int8 kernels: plain Python over signed int8 views, bit-exact with TFLM's reference
# kernels. They take the same arguments as kernels_viper's, parameters packed in an int32 view
# (see interpreter.Interpreter._prepare) and read one by one, as unpacking a slice would
# allocate on every inference. They write int32 accumulators (bias included) into `acc`;
# quant.requantize then scales those into the int8 output.


def fully_connected(x, w, acc, p):
    # p: depth, units, then per unit its bias with the input offset folded in.
    depth = p[0]
    units = p[1]
    base = 0
    for o in range(units):
        s = p[2 + o]
        for i in range(depth):
            s += x[i] * w[base + i]
        acc[o] = s
        base += depth


def conv2d(x, w, acc, p):
    # p: in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, s_h, s_w, p_h, p_w, d_h, d_w, input
    # offset, then the bias of each output channel.
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
    for oy in range(out_h):
        y0 = oy * s_h - p_h
        for ox in range(out_w):
            x0 = ox * s_w - p_w
            for oc in range(out_c):
                s = p[15 + oc]
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


def depthwise_conv2d(x, w, acc, p):
    # p: as for conv2d.
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
    mult = out_c // in_c
    n = 0
    for oy in range(out_h):
        y0 = oy * s_h - p_h
        for ox in range(out_w):
            x0 = ox * s_w - p_w
            for oc in range(out_c):
                ic = oc // mult
                s = p[15 + oc]
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


def max_pool(x, dst, p):
    # p: in_h, in_w, channels, out_h, out_w, k_h, k_w, s_h, s_w, p_h, p_w, then the clamp
    # bounds biased by +128.
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
    lo = p[11] - 128
    hi = p[12] - 128
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


def average_pool(x, dst, p):
    # p: as for max_pool.
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
    lo = p[11] - 128
    hi = p[12] - 128
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
