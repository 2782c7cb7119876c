# The node's outbox: every result goes to flash before it is published, and stays there until
# the controller acknowledges it, so no outage - broker, controller, Wi-Fi or power - loses one.
#
# Layout: a directory of numbered segment files (00000001.seg, ...), each an append-only run of
# records:  magic(1) kind(1) length(2) boot(4) seq(4) crc32(4) | payload(length)
# The CRC covers kind, length, boot, seq and the payload. On recovery a record whose CRC fails
# is skipped by scanning for the next magic byte, so a torn write at a segment's tail (a power
# cut mid-write) or a corrupt byte costs only the records it touched.
#
# Flush policy: records are buffered in RAM and written in one append when `flush_records`
# are waiting or `flush_ms` has passed (the caller's timer), which turns many small flash
# writes into few. Capacity: when the segments would exceed `capacity_bytes`, the oldest
# segment is dropped whole and its unacknowledged records are counted in `dropped`.
import binascii
import os
import struct
from array import array

from .errors import FirmwareError

MAGIC = 0xEF
HEADER = "<BBHIII"
HEADER_SIZE = 16
KIND_CODES = {"result": 1, "event": 2}
KIND_NAMES = {1: "result", 2: "event"}
MAX_PAYLOAD = 4096


class OutboxError(FirmwareError):
    pass


def _crc(kind, length, boot, seq, payload):
    head = struct.pack("<BHII", kind, length, boot, seq)
    return binascii.crc32(payload, binascii.crc32(head)) & 0xFFFFFFFF


def encode_record(kind, boot, seq, payload):
    code = KIND_CODES[kind]
    return struct.pack(HEADER, MAGIC, code, len(payload), boot, seq, _crc(code, len(payload), boot, seq, payload)) + payload


def scan_records(data):
    """Yield (offset, kind, boot, seq, payload) for every intact record in a segment's bytes,
    and ("bad", skipped bytes) markers where damaged bytes were skipped."""
    pos, end = 0, len(data)
    while pos + HEADER_SIZE <= end:
        magic, code, length, boot, seq, crc = struct.unpack_from(HEADER, data, pos)
        stop = pos + HEADER_SIZE + length
        if magic == MAGIC and code in KIND_NAMES and stop <= end:
            payload = bytes(data[pos + HEADER_SIZE:stop])
            if _crc(code, length, boot, seq, payload) == crc:
                yield pos, KIND_NAMES[code], boot, seq, payload
                pos = stop
                continue
        # Damaged here: resynchronise at the next magic byte.
        nxt = pos + 1
        while nxt < end and data[nxt] != MAGIC:
            nxt += 1
        yield "bad", nxt - pos
        pos = nxt
    if pos < end:
        yield "bad", end - pos


class Outbox:
    def __init__(self, directory, capacity_bytes=65536, segment_bytes=4096, flush_records=8, sync=None):
        self.dir = directory
        self.capacity = capacity_bytes
        self.segment_bytes = segment_bytes
        self.flush_records = flush_records
        # An fsync after each flush where the platform has one (Linux): survives power loss,
        # not only a killed process. MicroPython's littlefs commits on close.
        self._sync = sync if sync is not None else getattr(os, "fsync", None)
        # Per segment, oldest first, in flat arrays of C longs (the board's word: 32 bits on an
        # MCU, where a boot's result numbers stay far below 2**31): a full ESP32 outbox has 64
        # segments, and dicts keyed by segment with a list of tuples each held ~12 KB of its heap.
        self.segments = []        # segment numbers
        self.meta = array("l")    # bytes, records, result ranges: three ints a segment
        self.spans = array("l")   # the ranges, in segment order: boot, first seq, last seq
        self.acked = {}           # boot -> highest acknowledged result seq
        self.buffer = []          # encoded records not yet on flash
        self.cursor = None        # (segment, offset) of the next record to publish
        self.records = 0          # records on flash not yet trimmed
        self.dropped = 0
        self.bad_bytes = 0
        self.appended = 0
        self.flushes = 0
        self.bytes_written = 0

    # -- files --------------------------------------------------------------------------------

    def _path(self, segment):
        return "%s/%08d.seg" % (self.dir, segment)

    def _read(self, segment):
        try:
            with open(self._path(segment), "rb") as f:
                return f.read()
        except OSError:
            return b""

    def recover(self):
        """Rebuild the index from flash after a boot. Returns the highest result seq per boot."""
        try:
            os.mkdir(self.dir)
        except OSError:
            pass
        names = [n for n in os.listdir(self.dir) if n.endswith(".seg")]
        self.segments = sorted(int(n[:-4]) for n in names)
        self.meta, self.spans = array("l"), array("l")
        last = {}
        for segment in self.segments:
            self.meta.append(0)
            self.meta.append(0)
            self.meta.append(0)
            data = self._read(segment)
            count = 0
            for item in scan_records(data):
                if item[0] == "bad":
                    self.bad_bytes += item[1]
                    continue
                _, kind, boot, seq, _ = item
                count += 1
                if kind == "result":
                    self._extend(boot, seq)
                    if seq > last.get(boot, 0):
                        last[boot] = seq
            self.meta[-3] = len(data)
            self.meta[-2] = count
            self.records += count
        self.rewind()
        return last

    def _new_segment(self):
        segment = (self.segments[-1] + 1) if self.segments else 1
        while self.segments and self._total() + self.segment_bytes > self.capacity and len(self.segments) > 1:
            self._drop_oldest()
        # Bookkeeping first, the segment list last: if the heap runs out half way (an array
        # growing on a full MCU heap), the outbox stays consistent and the next flush retries.
        n = 3 * len(self.segments)
        try:
            for _ in range(3):
                self.meta.append(0)
            self.segments.append(segment)
        except MemoryError:
            self.meta = self.meta[:n]
            raise OutboxError("no heap for outbox segment %d" % segment)
        return segment

    def _total(self):
        total = 0
        for i in range(0, len(self.meta), 3):
            total += self.meta[i]
        return total

    def _size(self, segment):
        # Bytes on flash of a segment still kept; 0 for one dropped or trimmed meanwhile.
        for i in range(len(self.segments)):
            if self.segments[i] == segment:
                return self.meta[3 * i]
        return 0

    def _extend(self, boot, seq):
        # A result of the newest segment. Results of one boot are appended in seq order, so
        # (boot, first, last) describes them: usually one range a segment, a new one at a reboot.
        spans = self.spans
        if self.meta[-1] and spans[-3] == boot:
            if seq > spans[-1]:
                spans[-1] = seq
        else:
            spans.append(boot)
            spans.append(seq)
            spans.append(seq)
            self.meta[-1] += 1

    def _drop_oldest(self):
        self.dropped += self._unacked_in(0, self.meta[2])
        self._forget_oldest()

    def _forget_oldest(self):
        segment = self.segments.pop(0)
        self.records -= self.meta[1]
        self.spans = self.spans[3 * self.meta[2]:]
        self.meta = self.meta[3:]
        try:
            os.remove(self._path(segment))
        except OSError:
            pass
        if self.cursor is not None and self.cursor[0] == segment:
            self.cursor = (self.segments[0], 0) if self.segments else None

    # -- writing ------------------------------------------------------------------------------

    def append(self, kind, boot, seq, payload):
        """Queue a record; it is on flash after the next flush()."""
        if isinstance(payload, str):
            payload = payload.encode()
        if len(payload) > MAX_PAYLOAD:
            raise OutboxError("outbox record of %d bytes is over %d" % (len(payload), MAX_PAYLOAD))
        self.buffer.append((kind, boot, seq, encode_record(kind, boot, seq, payload)))
        self.appended += 1
        if len(self.buffer) >= self.flush_records:
            self.flush()

    def flush(self):
        """Write every buffered record to flash, one append per segment touched. A record is
        accounted for only once its append succeeded; on a write error the unwritten ones stay
        buffered for the next flush."""
        if not self.buffer:
            return 0
        written = 0
        while self.buffer:
            segment = self.segments[-1] if self.segments else self._new_segment()
            size = self.meta[-3]
            if size > 0 and size + len(self.buffer[0][3]) > self.segment_bytes:
                segment = self._new_segment()
                size = 0
            take = 0
            while take < len(self.buffer) and (take == 0 or size + len(self.buffer[take][3]) <= self.segment_bytes):
                size += len(self.buffer[take][3])
                take += 1
            chunk = self.buffer[:take]
            written += self._write(segment, [entry[3] for entry in chunk])
            for kind, boot, seq, _ in chunk:
                if kind == "result":
                    self._extend(boot, seq)
            self.meta[-2] += take
            self.records += take
            self.buffer = self.buffer[take:]
        self.flushes += 1
        if self.cursor is None:
            self.cursor = (self.segments[0], 0)
        return written

    def _write(self, segment, records):
        if not records:
            return 0
        data = b"".join(records)
        try:
            with open(self._path(segment), "ab") as f:
                f.write(data)
                if self._sync is not None:
                    f.flush()
                    self._sync(f.fileno())
        except OSError as e:
            # A full or failing flash: keep the records in RAM (caller retries on next flush).
            raise OutboxError("cannot write outbox segment %d: %s" % (segment, e))
        self.meta[-3] += len(data)   # always the newest segment
        self.bytes_written += len(data)
        return len(data)

    # -- reading for delivery -----------------------------------------------------------------

    def rewind(self):
        """Deliver again from the oldest unacknowledged record (after a reconnect, or when a
        new controller came up and may have missed what the broker took while it was gone)."""
        self.cursor = (self.segments[0], 0) if self.segments else None

    def next_batch(self, limit=8):
        """Up to `limit` unacknowledged records at the cursor, advancing it:
        [(kind, boot, seq, payload)]. New records flushed later are picked up on later calls."""
        out = []
        while self.cursor is not None and len(out) < limit:
            segment, offset = self.cursor
            offset = self._read_from(segment, offset, out, limit)
            self.cursor = (segment, offset)
            if len(out) >= limit or offset < self._size(segment):
                break
            i = self.segments.index(segment) if segment in self.segments else -1
            if i < 0 or i + 1 >= len(self.segments):
                break  # at the tail: stay here for records yet to come
            self.cursor = (self.segments[i + 1], 0)
        return out

    def _read_from(self, segment, offset, out, limit):
        """Read records one at a time (a board cannot spare a whole segment's buffer); returns
        the offset after the last record consumed."""
        end = self._size(segment)
        try:
            f = open(self._path(segment), "rb")
        except OSError:
            return end
        try:
            while offset + HEADER_SIZE <= end and len(out) < limit:
                f.seek(offset)
                header = f.read(HEADER_SIZE)
                magic, code, length, boot, seq, crc = struct.unpack(HEADER, header)
                payload = f.read(length) if magic == MAGIC and offset + HEADER_SIZE + length <= end else b""
                if len(payload) != length or code not in KIND_NAMES or _crc(code, length, boot, seq, payload) != crc:
                    offset = self._resync(f, offset + 1, end)
                    continue
                offset += HEADER_SIZE + length
                kind = KIND_NAMES[code]
                if not self._is_acked(kind, boot, seq):
                    out.append((kind, boot, seq, payload))
        finally:
            f.close()
        return offset

    def _resync(self, f, offset, end):
        # Damaged record: skip to the next magic byte (rare; only after a torn or bad write).
        f.seek(offset)
        while offset < end:
            byte = f.read(1)
            if not byte or byte[0] == MAGIC:
                return offset
            offset += 1
        return end

    # -- acknowledgements ---------------------------------------------------------------------

    def _is_acked(self, kind, boot, seq):
        return kind == "result" and seq <= self.acked.get(boot, 0)

    def ack(self, boot, seq):
        """The controller stored every result of `boot` up to `seq`; trim what is done."""
        if seq <= self.acked.get(boot, 0):
            return 0
        self.acked[boot] = seq
        trimmed = 0
        # The newest segment stays: it is the one being written.
        while len(self.segments) > 1 and self._unacked_in(0, self.meta[2]) == 0:
            self._forget_oldest()
            trimmed += 1
        return trimmed

    def _unacked_in(self, start, ranges):
        # Unacknowledged results in `ranges` ranges from spans[start].
        count = 0
        spans = self.spans
        for i in range(start, start + 3 * ranges, 3):
            count += max(0, spans[i + 2] - max(spans[i + 1] - 1, self.acked.get(spans[i], 0)))
        return count

    def oldest(self):
        """(boot, seq) of the oldest result on flash not yet acknowledged, or None."""
        spans = self.spans
        for i in range(0, len(spans), 3):
            done = self.acked.get(spans[i], 0)
            if done < spans[i + 2]:
                return spans[i], max(spans[i + 1], done + 1)
        return None

    def stats(self):
        return {"records": self.records, "bytes": self._total(), "dropped": self.dropped, "buffered": len(self.buffer)}

