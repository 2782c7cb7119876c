# The "topic" input source (firmware/sources.py): inputs published over MQTT to the workload's
# topic PREFIX/wl/WORKLOAD/input by whoever produces them (a camera node, a gateway, a user's
# program), served by whichever node runs the workload (docs/protocol.md, "Inputs").
#
# An `input` message is {"v": 1, "seq": N, "data": BASE64, "truth": L?}: N is the publisher's
# sequence number, which is the stream position (a result's `in`, what the controller's stream
# ledger accounts); data is the model's input as raw int8 bytes, exactly the model's input size.
#
# Inputs are served in sequence order: one below the next position (a duplicate, a replay, one
# before the assignment's input.start) is not served again; a gap in the numbers is skipped
# (counted); none at or past input.until (the hand-over point of a live migration: the next node
# serves those) is kept. At most `buffer` inputs (input.buffer, default 8) wait to be served;
# past that the oldest waiting one is dropped and counted (a live stream prefers its newest
# inputs to a growing delay). The heartbeat reports, per topic workload, `seen` (the highest
# sequence number received: the controller picks a hand-over point past it) and `dropped`.
#
# Crash accounting: on a Linux node (isolated workers) the last `buffer` inputs served stay
# buffered as well, so a batch a killed inference process never finished is served again
# (worker.unfinished sets pos back). Inputs waiting in RAM are lost with the node itself (a power
# cut, a reboot, an MCU crash): an MQTT subscriber cannot ask for them again. The subscription is
# made when the source opens and again on every new link; inputs published while the node had
# no link are not delivered to it.
import asyncio
import binascii

from . import protocol
from .errors import MQTTError, ProtocolError
from .sources import SourceError

DEFAULT_BUFFER = 8
MAX_BUFFER = 64


class TopicSource:
    live = True

    def __init__(self, spec, model, node=None, workload=None):
        size = model.input_size
        if size > protocol.MAX_INPUT_BYTES:
            raise SourceError("a topic input carries at most %d bytes; the model takes %d"
                              % (protocol.MAX_INPUT_BYTES, size))
        cap = spec.get("buffer", DEFAULT_BUFFER)
        if not isinstance(cap, int) or isinstance(cap, bool) or not 1 <= cap <= MAX_BUFFER:
            raise SourceError("input.buffer must be an integer 1-%d, not %r" % (MAX_BUFFER, cap))
        self.input_size = size
        self.cap = cap
        # Served inputs kept for a re-read after a kill: only where a worker re-reads (Linux).
        keep = cap if node is None or node.runtime == "cpython" else 0
        slots = cap + keep
        self._data = [bytearray(size) for _ in range(slots)]
        self._seq = [-1] * slots      # the input in each slot; -1: free
        self._truth = [None] * slots
        self.keep = keep
        self.pos = spec.get("start", 0)
        # Past every input served so far. Below it and at or past pos: a batch a kill cut short,
        # set back to be served again; those wait in the kept slots, not in the buffer.
        self.head = self.pos
        self.until = spec.get("until")
        self.seen = None      # highest sequence number received
        self.dropped = 0      # waiting inputs dropped for a full buffer
        self.skipped = 0      # sequence numbers never received (gaps)
        self.stale = 0        # inputs below the next position, not served
        self.rejected = 0     # malformed inputs (wrong size, bad base64)
        self.node = node
        self.workload = workload
        self.topic = None
        self._client = None   # the link the subscription was made on
        self._pending_sub = False
        self._ready = asyncio.Event()
        self.closed = False
        if node is not None:
            self.topic = protocol.input_topic(node.prefix, workload)
            self._link()

    # -- the subscription -------------------------------------------------------------------

    def _link(self):
        node = self.node
        if node is None or self._pending_sub or not node.online() or node.client is self._client:
            return
        self._pending_sub = True
        asyncio.create_task(self._subscribe(node.client))

    async def _subscribe(self, client):
        try:
            await client.subscribe(self.topic, 1)
            if self.closed:
                # Closed while subscribing: undo it, unless a newer source of the workload has
                # opened since (its own SUBSCRIBE went out after ours: ours would undo it).
                worker = self.node.workers.get(self.workload)
                newer = worker.source if worker is not None else None
                if newer is None or newer is self:
                    await client.unsubscribe(self.topic)
            else:
                self._client = client
        except MQTTError as e:
            # Retried on the worker's next read; a refusal (the broker's ACL) is worth an event.
            if self.node is not None and type(e).__name__ == "SubscribeRefused":
                self.node.event("error", "input_refused", "%s: %s" % (self.topic, e))
        finally:
            self._pending_sub = False

    # -- inputs in ---------------------------------------------------------------------------

    def push(self, msg):
        """A decoded `input` message (protocol.decode checked its fields). Raises ProtocolError
        for one this workload cannot take (the node counts and reports it)."""
        try:
            data = binascii.a2b_base64(msg["data"])
        except (ValueError, TypeError):
            self.rejected += 1
            raise ProtocolError("input: 'data' is not base64", kind="input", field="data")
        if len(data) != self.input_size:
            self.rejected += 1
            raise ProtocolError("input: %d bytes, the model takes %d" % (len(data), self.input_size),
                                kind="input", field="data")
        self.accept(msg["seq"], data, msg.get("truth"))

    def accept(self, seq, data, truth=None):
        if self.seen is None or seq > self.seen:
            self.seen = seq
        until = self.until
        if seq < self.pos or (until is not None and seq >= until):
            self.stale += 1
            return
        seqs = self._seq
        pos, head = self.pos, self.head
        pending = 0
        free = -1
        oldest = -1   # the waiting input with the lowest number
        for i in range(len(seqs)):
            s = seqs[i]
            if s == seq:
                self.stale += 1   # a duplicate (QoS 1 redelivery)
                return
            if s >= head:
                pending += 1
                if oldest < 0 or s < seqs[oldest]:
                    oldest = i
            elif s < pos and (free < 0 or s < seqs[free]):
                free = i   # an empty slot (-1), else the input served longest ago
        if pending >= self.cap or free < 0:
            if oldest < 0 or seq < seqs[oldest]:
                self.dropped += 1   # older than all that wait: it is the one dropped
                return
            free = oldest
            self.dropped += 1
        self._data[free][:] = data
        seqs[free] = seq
        self._truth[free] = truth
        self._ready.set()

    # -- the source interface (firmware/sources.py) -------------------------------------------

    def _next(self):
        """The slot of the next input to serve, or -1."""
        best = -1
        seqs = self._seq
        pos = self.pos
        for i in range(len(seqs)):
            s = seqs[i]
            if s >= pos and (best < 0 or s < seqs[best]):
                best = i
        until = self.until
        if until is not None and pos < until:
            if (best >= 0 and seqs[best] >= until) or (best < 0 and self.seen is not None and self.seen >= until):
                # Nothing before the hand-over point is left to come (one publisher, in order).
                self._advance(until, until - pos)
                return -1
        return best

    def _advance(self, pos, skipped):
        # The head moves with the position but never back: inputs between a set-back position
        # and the head are a batch to serve again, and the buffer's cap leaves their slots alone.
        self.skipped += skipped
        self.pos = pos
        if pos > self.head:
            self.head = pos

    def waiting(self):
        count = 0
        limit = self.until
        for s in self._seq:
            if s >= self.pos and (limit is None or s < limit):
                count += 1
        return count

    async def next_into(self, buf, wait_ms=0):
        self._link()
        i = self._next()
        if i < 0 and wait_ms:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), wait_ms / 1000)
            except asyncio.TimeoutError:
                pass
            i = self._next()
        if i < 0:
            return None
        seq = self._seq[i]
        if self.until is not None and seq >= self.until:
            return None
        buf[0:self.input_size] = self._data[i]
        self._advance(seq + 1, max(0, seq - self.pos))
        truth = self._truth[i]
        if not self.keep:
            self._seq[i] = -1
        return seq, truth

    def report(self):
        """What the heartbeat tells of this stream (docs/protocol.md, heartbeat `wl`)."""
        out = {"dropped": self.dropped}
        if self.seen is not None:
            out["seen"] = self.seen
        return out

    def close(self):
        self.closed = True
        node, client = self.node, self._client
        self._client = None
        if node is not None and client is not None and node.client is client and node.online():
            asyncio.create_task(_unsubscribe(client, self.topic))


async def _unsubscribe(client, topic):
    try:
        await client.unsubscribe(topic)
    except MQTTError:
        pass   # the link went down: the subscription went with it
