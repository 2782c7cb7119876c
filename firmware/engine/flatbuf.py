# A minimal, bounds-checked FlatBuffers reader over bytes/memoryview.
#
# Only what reading a .tflite file needs: tables with vtables, scalars, vectors of scalars,
# vectors of tables, strings and raw byte vectors returned as zero-copy memoryviews. Every read
# is checked against the buffer length so that a truncated or corrupt file raises MalformedModel
# with the offending offset instead of an IndexError deep inside a kernel.
import struct

from .errors import MalformedModel

_SIZES = {"b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "q": 8, "Q": 8, "f": 4}


class Buffer:
    def __init__(self, data):
        self.data = data
        self.view = memoryview(data)
        self.size = len(data)

    def check(self, offset, length):
        if offset < 0 or length < 0 or offset + length > self.size:
            raise MalformedModel("read of %d bytes past the end of a %d-byte model" % (length, self.size),
                                 offset)

    def scalar(self, fmt, offset):
        self.check(offset, _SIZES[fmt])
        return struct.unpack_from("<" + fmt, self.data, offset)[0]

    def indirect(self, offset):
        # uoffset_t fields point forward, relative to where they are stored.
        target = offset + self.scalar("I", offset)
        if target >= self.size:
            raise MalformedModel("offset points past the end of the model", offset)
        return target

    def root(self):
        return Table(self, self.indirect(0))


class Table:
    __slots__ = ("buf", "pos", "vtable", "vtable_size")

    def __init__(self, buf, pos):
        self.buf = buf
        self.pos = pos
        self.vtable = pos - buf.scalar("i", pos)
        self.vtable_size = buf.scalar("H", self.vtable)
        if self.vtable_size < 4 or self.vtable_size & 1:
            raise MalformedModel("bad vtable size %d" % self.vtable_size, self.vtable)
        buf.check(self.vtable, self.vtable_size)

    def _field(self, index):
        slot = 4 + 2 * index
        if slot >= self.vtable_size:
            return 0
        return self.buf.scalar("H", self.vtable + slot)

    def has(self, index):
        return self._field(index) != 0

    def scalar(self, index, fmt, default=0):
        off = self._field(index)
        if not off:
            return default
        return self.buf.scalar(fmt, self.pos + off)

    def table(self, index):
        off = self._field(index)
        if not off:
            return None
        return Table(self.buf, self.buf.indirect(self.pos + off))

    def _vector(self, index, elem_size):
        """(position of first element, length) or None when the field is absent."""
        off = self._field(index)
        if not off:
            return None
        start = self.buf.indirect(self.pos + off)
        length = self.buf.scalar("I", start)
        self.buf.check(start + 4, length * elem_size)
        return start + 4, length

    def scalars(self, index, fmt):
        vec = self._vector(index, _SIZES[fmt])
        if vec is None:
            return None
        start, length = vec
        size = _SIZES[fmt]
        return [struct.unpack_from("<" + fmt, self.buf.data, start + i * size)[0] for i in range(length)]

    def bytes_view(self, index):
        """Zero-copy memoryview of a [ubyte] vector, or None."""
        vec = self._vector(index, 1)
        if vec is None:
            return None
        start, length = vec
        return self.buf.view[start:start + length]

    def bytes_span(self, index):
        """(offset, length) of a [ubyte] vector inside the file, or None."""
        return self._vector(index, 1)

    def tables(self, index):
        vec = self._vector(index, 4)
        if vec is None:
            return []
        start, length = vec
        return [Table(self.buf, self.buf.indirect(start + 4 * i)) for i in range(length)]

    def string(self, index):
        vec = self._vector(index, 1)
        if vec is None:
            return None
        start, length = vec
        return str(bytes(self.buf.view[start:start + length]), "utf-8")
