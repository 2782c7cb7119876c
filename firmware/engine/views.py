# Zero-copy signed int8 views over bytes/bytearray memory.
#
# Kernels index tensors as signed int8. CPython gets that from memoryview.cast('b'); MicroPython
# has no cast, but uctypes can lay an INT8 array over the same memory (its indexing is as fast
# as a memoryview's). Neither copies the weights out of the model bytes.
try:
    import uctypes
except ImportError:
    uctypes = None


def signed(view):
    """Signed int8 indexable view of a bytes-like object (a memoryview slice is fine)."""
    if uctypes is None:
        return memoryview(view).cast("b")
    n = len(view)
    if n == 0:
        return view
    return uctypes.struct(uctypes.addressof(view), {"v": (uctypes.ARRAY | 0, uctypes.INT8 | n)}).v


def int32(buf):
    """Signed int32 view of a 4-aligned bytearray slice (native byte order; accumulators)."""
    if uctypes is None:
        return memoryview(buf).cast("i")
    return uctypes.struct(uctypes.addressof(buf), {"v": (uctypes.ARRAY | 0, uctypes.INT32 | (len(buf) // 4))},
                          uctypes.NATIVE).v


def int32_list(view):
    """int32 little-endian values of a small constant (bias vectors, shapes), decoded once."""
    import struct
    n = len(view) // 4
    return list(struct.unpack("<%di" % n, bytes(view[:n * 4])))
