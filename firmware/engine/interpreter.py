# Prepares a parsed model into a list of kernel calls over one preallocated arena, then runs
# them. All per-model arithmetic (multipliers, clamp ranges, folded biases, geometry) happens
# here at load time; invoke() only moves int8 data.
import sys

from . import model as tfl, plan, quant, softmax, views, kernels_pure, opnames
from .errors import UnsupportedOp, ModelTooLarge, EngineError

IS_MICROPYTHON = sys.implementation.name == "micropython"
WORD_BITS = 64 if sys.maxsize > (1 << 32) else 32
_ONE_F32_BITS = 0x3F800000  # 1.0f, SOFTMAX's default beta


def _import_viper():
    if not IS_MICROPYTHON:
        return None
    try:
        from . import kernels_viper
        return kernels_viper
    except (ImportError, SyntaxError, ValueError):
        # A port without the native emitter rejects the viper decorator (SyntaxError) or an
        # .mpy built for another architecture (ValueError). A ViperTypeError (a TypeError) is a
        # bug in kernels_viper and is not caught here.
        return None


# Imported with the engine, not on first load(): loading native code from an .mpy needs
# contiguous heap that a just-parsed model leaves fragmented (seen failing on a 96 KB heap).
_VIPER = _import_viper()


def _viper_kernels():
    return _VIPER


def _read_model(path_or_bytes):
    if isinstance(path_or_bytes, str):
        import os
        # One allocation of the exact size: read() would grow its buffer and, on a small
        # heap, need several times the file size at its peak.
        data = bytearray(os.stat(path_or_bytes)[6])
        with open(path_or_bytes, "rb") as f:
            n = f.readinto(data)
        if n != len(data):
            return bytes(data[:n])
        return data
    return path_or_bytes


def arena_bytes_for(path_or_bytes):
    """Arena size the model needs, without preparing kernels (for placement decisions)."""
    return plan.plan(tfl.Model(_read_model(path_or_bytes)))[0]


class Interpreter:
    def __init__(self, data, arena_budget=None, kernels=None):
        self.model_bytes = data  # weights are views into these bytes; keep them alive
        m = tfl.Model(data)
        self.model = m
        self.arena_bytes, offsets = plan.plan(m)
        if arena_budget is not None and self.arena_bytes > arena_budget:
            raise ModelTooLarge(self.arena_bytes, arena_budget)
        if kernels is None:
            kernels = "viper" if _viper_kernels() else "pure"
        if kernels == "viper":
            self._viper = _viper_kernels()
            if self._viper is None:
                raise EngineError("viper kernels need MicroPython with the native emitter")
        elif kernels == "pure":
            self._viper = None
        else:
            raise ValueError("kernels must be 'pure', 'viper' or None")
        self.kernels = kernels
        for op in m.operators:
            if op.code not in _PREPARE:
                raise UnsupportedOp(op.name, op.code, op.index)
        scratch = 0
        for op in m.operators:
            if op.code in (opnames.FULLY_CONNECTED, opnames.CONV_2D, opnames.DEPTHWISE_CONV_2D):
                scratch = max(scratch, m.tensors[op.outputs[0]].nbytes)
        self.scratch_bytes = 4 * scratch
        if IS_MICROPYTHON:
            # The parsed model's many small objects sit scattered over the heap; on a small
            # board heap no contiguous block may be left for the arena between them. So drop
            # the parse, allocate the arena into the emptied heap, then parse again.
            import gc
            m = self.model = None
            gc.collect()
        # One allocation: the activation arena (plan offsets, 4-aligned size) followed by the
        # int32 accumulators of the op being run, which the pure kernels and requantize() view
        # as signed int32 and the viper kernels receive as raw memory.
        self.arena = bytearray(self.arena_bytes + self.scratch_bytes)
        arena_view = memoryview(self.arena)
        self._acc_bytes = arena_view[self.arena_bytes:]
        self._acc = views.int32(self._acc_bytes) if scratch else None
        if m is None:
            m = self.model = tfl.Model(data)
        self._raw = {}
        self._signed = {}
        for t, off in offsets.items():
            raw = arena_view[off:off + m.tensors[t].nbytes]
            self._raw[t] = raw
            self._signed[t] = views.signed(raw)
        self._steps = []
        for op in m.operators:
            self._check_int8(op)
            _PREPARE[op.code](self, op)
        inp = m.tensors[m.inputs[0]]
        out = m.tensors[m.outputs[0]]
        self.input_size = inp.nbytes
        self.output_size = out.nbytes
        self.input_shape = inp.shape
        self.output_shape = out.shape
        self.input_quant = inp.quant()
        self.output_quant = out.quant()
        self._input = self._raw[m.inputs[0]]
        self._output = self._raw[m.outputs[0]]
        # The parsed schema objects are only needed to prepare; the steps hold what invoke()
        # uses, and model_bytes keeps the weights they view alive.
        self.model = None
        self._raw = None
        self._signed = None

    def _check_int8(self, op):
        t = self.model.tensors
        for i in [op.inputs[0]] + op.outputs:
            if t[i].dtype != tfl.INT8:
                raise UnsupportedOp(op.name, op.code, op.index,
                                    "tensor %r is %s; the engine runs int8 models" % (
                                        t[i].name, tfl.DTYPE_NAMES.get(t[i].dtype, t[i].dtype)))

    def invoke(self, data):
        """Run one inference. data: input_size int8 values as a bytes-like object. Returns a
        memoryview of the output's int8 values as raw bytes (reused; copy it to keep it)."""
        if len(data) != self.input_size:
            raise EngineError("input has %d bytes, model takes %d" % (len(data), self.input_size))
        self._input[:] = data
        for fn, args in self._steps:
            fn(*args)
        return self._output

    def output_int8(self):
        """The last output as a list of signed ints."""
        return [(v ^ 0x80) - 0x80 for v in self._output]

    # ---- per-operator preparation ----

    def _requant_params(self, op, x, w, out, channels, per_channel_double):
        mults, lshifts, rshifts = [], [], []
        scales = w.scale_bits
        if len(scales) not in (1, channels):
            raise UnsupportedOp(op.name, op.code, op.index, "filter has %d scales for %d channels" % (len(scales), channels))
        for zp in w.zero_point:
            if zp != 0:
                raise UnsupportedOp(op.name, op.code, op.index, "filter zero point must be 0")
        for s in scales:
            if per_channel_double:
                mult, shift = quant.conv_multiplier(x.scale_bits[0], s, out.scale_bits[0])
            else:
                mult, shift = quant.fc_multiplier(x.scale_bits[0], s, out.scale_bits[0])
            mults.append(mult)
            lshifts.append(shift if shift > 0 else 0)
            rshifts.append(-shift if shift < 0 else 0)
        return mults, lshifts, rshifts

    def _activation(self, op, act, out):
        rng = quant.activation_range(act, out.scale_bits[0], out.quant()[1])
        if rng is None:
            raise UnsupportedOp(op.name, op.code, op.index, "fused activation %d" % act)
        return rng

    def _bias(self, op, channels):
        if len(op.inputs) < 3 or op.inputs[2] < 0:
            return [0] * channels
        b = self.model.tensors[op.inputs[2]]
        if b.dtype != tfl.INT32 or b.data is None:
            raise UnsupportedOp(op.name, op.code, op.index, "bias must be a constant int32 tensor")
        return views.int32_list(b.data)

    def _add_requant(self, count, channels, params, out_zp, lo, hi, out_index):
        mults, lshifts, rshifts = params
        if self._viper and WORD_BITS == 64:
            packed, values = _int32_buffer(4 + 3 * channels)
            values[0], values[1], values[2], values[3] = channels, out_zp + 128, lo + 128, hi + 128
            for c in range(channels):
                values[4 + 3 * c] = mults[c]
                values[5 + 3 * c] = lshifts[c]
                values[6 + 3 * c] = rshifts[c]
            self._steps.append((self._viper.requantize_64bit,
                                (self._acc_bytes, self._raw[out_index], packed, count)))
            return
        self._steps.append((kernels_pure.requantize,
                            (self._acc, count, channels, mults, lshifts, rshifts, out_zp, lo, hi,
                             self._signed[out_index])))

    def _prepare_fully_connected(self, op):
        t = self.model.tensors
        x, w, out = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
        if w.data is None or len(w.shape) != 2:
            raise UnsupportedOp(op.name, op.code, op.index, "weights must be a constant 2-D tensor")
        units, depth = w.shape
        if x.nbytes != depth or out.nbytes != units:
            raise UnsupportedOp(op.name, op.code, op.index, "only batch 1 is supported")
        act = op.options.scalar(0, "b", 0) if op.options else 0
        lo, hi = self._activation(op, act, out)
        params = self._requant_params(op, x, w, out, units, len(w.scale_bits) > 1)
        in_off = -x.quant()[1]
        bias = self._bias(op, units)
        wv = views.signed(w.data)
        folded = []
        for o in range(units):
            s = 0
            for i in range(o * depth, (o + 1) * depth):
                s += wv[i]
            folded.append(bias[o] + in_off * s)
        if self._viper:
            packed = _int32_pack([depth, units], folded)
            self._steps.append((self._viper.fully_connected,
                                (self._raw[op.inputs[0]], w.data, self._acc_bytes, packed)))
        else:
            self._steps.append((kernels_pure.fully_connected,
                                (self._signed[op.inputs[0]], wv, self._acc, depth, units, in_off, folded)))
        self._add_requant(units, len(params[0]), params, out.quant()[1], lo, hi, op.outputs[0])

    def _conv_geometry(self, op, x, out, k_h, k_w, options, first_field):
        """(in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, s_h, s_w, p_h, p_w, d_h, d_w)."""
        if len(x.shape) != 4 or x.shape[0] != 1 or len(out.shape) != 4:
            raise UnsupportedOp(op.name, op.code, op.index, "only batch-1 NHWC tensors are supported")
        padding = options.scalar(0, "b", 0)
        s_w = options.scalar(1, "i", 1)
        s_h = options.scalar(2, "i", 1)
        d_w = options.scalar(first_field, "i", 1) if first_field else 1
        d_h = options.scalar(first_field + 1, "i", 1) if first_field else 1
        in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
        out_h, out_w, out_c = out.shape[1], out.shape[2], out.shape[3]
        eff_h = (k_h - 1) * d_h + 1
        eff_w = (k_w - 1) * d_w + 1
        if padding == 0:  # SAME
            want_h, want_w = (in_h + s_h - 1) // s_h, (in_w + s_w - 1) // s_w
        else:  # VALID
            want_h, want_w = (in_h - eff_h + s_h) // s_h, (in_w - eff_w + s_w) // s_w
        if (want_h, want_w) != (out_h, out_w):
            raise UnsupportedOp(op.name, op.code, op.index, "output shape does not match padding and stride")
        # TFLM pads by half the total, the odd pixel going after the image (bottom/right).
        p_h = max(((out_h - 1) * s_h + eff_h - in_h) // 2, 0)
        p_w = max(((out_w - 1) * s_w + eff_w - in_w) // 2, 0)
        return [in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, s_h, s_w, p_h, p_w, d_h, d_w]

    def _prepare_conv(self, op, depthwise):
        t = self.model.tensors
        x, w, out = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
        if w.data is None or len(w.shape) != 4:
            raise UnsupportedOp(op.name, op.code, op.index, "filter must be a constant 4-D tensor")
        opts = op.options
        if opts is None:
            raise UnsupportedOp(op.name, op.code, op.index, "missing options")
        if depthwise:
            g = self._conv_geometry(op, x, out, w.shape[1], w.shape[2], opts, 5)
            act = opts.scalar(4, "b", 0)
            if w.shape[3] != g[5] or g[5] % g[2]:
                raise UnsupportedOp(op.name, op.code, op.index, "filter channels do not match")
        else:
            g = self._conv_geometry(op, x, out, w.shape[1], w.shape[2], opts, 4)
            act = opts.scalar(3, "b", 0)
            if w.shape[0] != g[5] or w.shape[3] != g[2]:
                raise UnsupportedOp(op.name, op.code, op.index, "grouped convolution")
        out_c = g[5]
        lo, hi = self._activation(op, act, out)
        params = self._requant_params(op, x, w, out, out_c, True)
        in_off = -x.quant()[1]
        bias = self._bias(op, out_c)
        if self._viper:
            fn = self._viper.depthwise_conv2d if depthwise else self._viper.conv2d
            packed = _int32_pack(g + [in_off], bias)
            self._steps.append((fn, (self._raw[op.inputs[0]], w.data, self._acc_bytes, packed)))
        else:
            fn = kernels_pure.depthwise_conv2d if depthwise else kernels_pure.conv2d
            self._steps.append((fn, (self._signed[op.inputs[0]], views.signed(w.data), self._acc,
                                     tuple(g + [in_off]), bias)))
        self._add_requant(out.nbytes, len(params[0]), params, out.quant()[1], lo, hi, op.outputs[0])

    def _prepare_pool(self, op, maximum):
        t = self.model.tensors
        x, out = t[op.inputs[0]], t[op.outputs[0]]
        opts = op.options
        if opts is None:
            raise UnsupportedOp(op.name, op.code, op.index, "missing options")
        if x.quant() != out.quant():
            raise UnsupportedOp(op.name, op.code, op.index, "input and output quantization differ")
        k_w, k_h = opts.scalar(3, "i", 1), opts.scalar(4, "i", 1)
        g = self._conv_geometry(op, x, out, k_h, k_w, opts, 0)
        if g[2] != g[5]:
            raise UnsupportedOp(op.name, op.code, op.index, "pool changes the channel count")
        lo, hi = self._activation(op, opts.scalar(5, "b", 0), out)
        geometry = g[:2] + [g[2]] + g[3:5] + g[6:12] + [lo, hi]
        if self._viper:
            fn = self._viper.max_pool if maximum else self._viper.average_pool
            biased = geometry[:-2] + [lo + 128, hi + 128]
            self._steps.append((fn, (self._raw[op.inputs[0]], self._raw[op.outputs[0]], _int32_pack(biased, ()))))
        else:
            fn = kernels_pure.max_pool if maximum else kernels_pure.average_pool
            self._steps.append((fn, (self._signed[op.inputs[0]], self._signed[op.outputs[0]], tuple(geometry))))

    def _prepare_reshape(self, op):
        t = self.model.tensors
        x, out = t[op.inputs[0]], t[op.outputs[0]]
        if x.nbytes != out.nbytes:
            raise UnsupportedOp(op.name, op.code, op.index, "reshape changes the element count")
        self._steps.append((_copy, (self._raw[op.outputs[0]], self._raw[op.inputs[0]])))

    def _prepare_softmax(self, op):
        t = self.model.tensors
        x, out = t[op.inputs[0]], t[op.outputs[0]]
        if out.scale_bits[:1] != [0x3B800000] or out.quant()[1] != -128:
            raise UnsupportedOp(op.name, op.code, op.index, "int8 output must have scale 1/256, zero point -128")
        beta_bits = op.options.scalar(0, "I", _ONE_F32_BITS) if op.options else _ONE_F32_BITS
        multiplier, shift, diff_min = softmax.prepare(beta_bits, x.scale_bits[0])
        depth = x.shape[-1]
        self._steps.append((softmax.softmax_int8,
                            (self._signed[op.inputs[0]], self._signed[op.outputs[0]],
                             x.nbytes // depth, depth, multiplier, shift, diff_min, [0] * depth)))


def _int32_buffer(count):
    """(bytearray, signed int32 view of it): parameter blocks for the viper kernels, built in
    one allocation because list growth and copies fragment a small board heap."""
    buf = bytearray(4 * count)
    return buf, views.int32(buf)


def _int32_pack(head, tail):
    buf, values = _int32_buffer(len(head) + len(tail))
    i = 0
    for v in head:
        values[i] = v
        i += 1
    for v in tail:
        values[i] = v
        i += 1
    return buf


def _copy(dst, src):
    dst[:] = src


_PREPARE = {
    opnames.FULLY_CONNECTED: Interpreter._prepare_fully_connected,
    opnames.CONV_2D: lambda self, op: self._prepare_conv(op, False),
    opnames.DEPTHWISE_CONV_2D: lambda self, op: self._prepare_conv(op, True),
    opnames.MAX_POOL_2D: lambda self, op: self._prepare_pool(op, True),
    opnames.AVERAGE_POOL_2D: lambda self, op: self._prepare_pool(op, False),
    opnames.RESHAPE: Interpreter._prepare_reshape,
    opnames.SOFTMAX: Interpreter._prepare_softmax,
}


def load(path_or_bytes, arena_budget=None, kernels=None):
    """Parse and prepare a .tflite model. kernels: None (fastest available), 'pure' or 'viper'."""
    return Interpreter(_read_model(path_or_bytes), arena_budget, kernels)
