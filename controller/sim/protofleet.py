"""Many protocol-level simulated nodes (protonode.py) on one event loop, in a thread of their own,
so a test or a benchmark can run a fleet of hundreds or thousands beside its controllers."""
import asyncio
import threading

from edgefleet.firmware import protocol

from .protonode import NodeStats, ProtoNode


def new_event_loop():
    """uvloop's where it is installed (the [sim] extra): a fleet's cost is mostly the event
    loop's own, per socket event and timer, and uvloop's is a fraction of asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ProtoFleet:
    def __init__(self, count, host, port, prefix=protocol.DEFAULT_PREFIX, id_prefix="sim", ramp_s=None, hb_s=1.0,
                 keepalive=10, ids=None):
        # ids: the nodes' ids (a benchmark splits one fleet over processes); default
        # ID_PREFIX-0 ... ID_PREFIX-(count-1).
        ids = ids if ids is not None else ["%s-%d" % (id_prefix, i) for i in range(count)]
        self.stats = NodeStats()
        # Connects spread over ramp_s (default: 200 a second) rather than one storm at the broker.
        self.ramp_s = len(ids) / 200.0 if ramp_s is None else ramp_s
        self.nodes = [ProtoNode(node_id, host, port, prefix, hb_s=hb_s, keepalive=keepalive, stats=self.stats)
                      for node_id in ids]
        self.loop = None
        self._thread = None
        self._stop = None
        self._ready = threading.Event()
        self._main = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name="protofleet", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self):
        self.loop = new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._stop = asyncio.Event()
        self._ready.set()
        count = max(1, len(self.nodes))
        self._main = asyncio.gather(*(node.run(self._stop, self.ramp_s * i / count) for i, node in enumerate(self.nodes)),
                                    return_exceptions=True)
        try:
            self.outcomes = self.loop.run_until_complete(self._main)
        finally:
            self.loop.close()

    def call(self, coro, timeout=10):
        """Run a coroutine on the fleet's loop; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def node(self, node_id):
        return next(n for n in self.nodes if n.id == node_id)

    def connected(self):
        return sum(1 for n in self.nodes if n.connected)

    def outbox_records(self):
        return sum(len(n.outbox) for n in self.nodes)

    def made(self):
        """{(node, boot, seq)} of every result the fleet made (seq counts from 1 per boot)."""
        return {(n.id, n.boot, seq) for n in self.nodes for seq in range(1, n.seq + 1)}

    def position(self, node_id, seq):
        """(workload, stream position) of a result the fleet made."""
        return self.node(node_id).made[seq]

    def held(self):
        """{(node, boot, seq)} of the results still in outboxes, not acknowledged."""
        return {(n.id, n.boot, seq) for n in self.nodes for seq in list(n.outbox)}

    def quiesce(self):
        """No new results from here on; what is in the outboxes is still delivered."""
        for node in self.nodes:
            node.inferring = False

    def crash(self, node_id, down_s=0.0):
        self.call(self.node(node_id).crash(down_s))

    def stop(self, timeout=15):
        if self.loop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
        errors = [o for o in getattr(self, "outcomes", []) if isinstance(o, BaseException)]
        if errors:
            raise errors[0]
