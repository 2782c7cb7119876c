# Folds the shape arithmetic of Keras's default export away at load time.
#
# A Keras model with a dynamic batch dimension exports a Flatten or Reshape as SHAPE ->
# STRIDED_SLICE -> PACK -> RESHAPE: the new shape is computed from the input's shape on every
# inference. The engine runs static shapes (the file's `shape` field, batch 1), so every value
# of that chain is known when the model loads. This module computes those values once; the
# folded ops then get no step, no arena space, and RESHAPE checks the computed shape against
# its output tensor. Imported by the loader only for a model that has such ops, and let go with it.
import struct

from . import loader

SHAPE = 77
STRIDED_SLICE = 45
PACK = 83
RESHAPE = 22
FOLDABLE = (SHAPE, STRIDED_SLICE, PACK)
_INT_TYPES = {2: ("<i", 4), 4: ("<q", 8)}   # int32, int64


def _constant(g, t):
    """The values of a constant int32/int64 tensor as a list, or None when it is not one."""
    fields = loader.tensor(g, t)
    if fields[3] is None or fields[1] not in _INT_TYPES:
        return None
    fmt, size = _INT_TYPES[fields[1]]
    raw = loader._bytes(g.data, fields[3], fields[2])
    return [struct.unpack_from(fmt, raw, i * size)[0] for i in range(fields[2] // size)]


def _count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def _strided_slice(g, opts, x, begin, end, strides):
    d = g.data
    # StridedSliceOptions: begin_mask, end_mask, ellipsis_mask, new_axis_mask, shrink_axis_mask, offset.
    if len(begin) != 1 or len(end) != 1 or len(strides) != 1:
        return None, "only 1-D slices of a shape are folded"
    if loader.scalar(d, opts, 2, "<i") or loader.scalar(d, opts, 3, "<i") or loader.scalar(d, opts, 5, "<b"):
        return None, "ellipsis, new-axis and offset slices are not folded"
    n, b, e, s = len(x), begin[0], end[0], strides[0]
    if s == 0:
        return None, "stride 0"
    if loader.scalar(d, opts, 4, "<i") & 1:
        i = b + n if b < 0 else b
        if not 0 <= i < n:
            return None, "index out of range"
        return [x[i]], None
    lo, hi = (0, n) if s > 0 else (-1, n - 1)

    def bound(v, masked, default):
        if masked:
            return default
        v = v + n if v < 0 else v
        return lo if v < lo else (hi if v > hi else v)
    b = bound(b, loader.scalar(d, opts, 0, "<i") & 1, 0 if s > 0 else n - 1)
    e = bound(e, loader.scalar(d, opts, 1, "<i") & 1, n if s > 0 else -1)
    return [x[i] for i in range(b, e, s)], None


def fold(g):
    """Sets g.folded ({op index: None}), g.fold_refusals ({op index: why it cannot be folded,
    or for a RESHAPE why its computed shape is wrong}) and g.values ({tensor: its values}) for
    the tensors folded ops compute."""
    g.values = values = {}
    g.folded = {}
    g.fold_refusals = refusals = {}
    for i in range(len(g.ops)):
        code, inputs, outputs, opts = g.ops[i]
        if code not in FOLDABLE and code != RESHAPE:
            continue
        if code == RESHAPE:
            if len(inputs) > 1 and inputs[1] in values:
                why = _check_reshape(g, i, values[inputs[1]])
                if why:
                    refusals[i] = why
            continue
        if len(outputs) != 1:
            refusals[i] = "%d outputs" % len(outputs)
            continue
        args = []
        for t in inputs:
            v = values.get(t)
            if v is None and code != SHAPE:
                v = _constant(g, t)
            args.append(v)
        why = None
        if code == SHAPE:
            result = loader.tensor(g, inputs[0])[0]
        elif None in args:
            result, why = None, "an input is computed at run time, not known at load"
        elif code == STRIDED_SLICE:
            result, why = _strided_slice(g, opts, *args[:4]) if len(args) == 4 else (None, "needs 4 inputs")
        else:
            # PACK of scalars or along axis 0 is their concatenation in row-major order.
            if loader.scalar(g.data, opts, 1, "<i") != 0:
                result, why = None, "only packing along axis 0 is folded"
            else:
                result = [v for a in args for v in a]
        if result is not None and _count(loader.tensor(g, outputs[0])[0]) != len(result):
            result, why = None, "computed %d values for a tensor of shape %s" % (
                len(result), loader.tensor(g, outputs[0])[0])
        if result is None:
            refusals[i] = why
            continue
        values[outputs[0]] = result
        g.folded[i] = None


def _check_reshape(g, index, shape):
    out = loader.tensor(g, g.ops[index][2][0])[0]
    size = _count(loader.tensor(g, g.ops[index][1][0])[0])
    known = 1
    for v in shape:
        if v != -1:
            known *= v
    resolved = [size // known if v == -1 and known else v for v in shape]
    if resolved != out:
        return "the computed shape %s is not the output's %s" % (resolved, out)
    return None
