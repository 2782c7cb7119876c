"""A protocol-level simulated node: what a board says and does on the wire, without a board.

simboard.py boots the real firmware under an interpreter per node: faithful, and a few dozen per
machine. A ProtoNode is a coroutine speaking the same protocol (docs/protocol.md) through the
firmware's own MQTT client (firmware/mqtt.py) and its own encode/decode (firmware/protocol.py, so
it is held to the same schemas and vectors): hello and a retained status with its Last Will on
every connect, heartbeats with telemetry and the outbox's marks, results at each assigned
workload's rate with stream positions, kept in an outbox until an ack covers them and delivered
again from the oldest unacknowledged on every reconnect and every `ctrl_status` online, at most 8
in flight; assignments by epoch with hand-over points; the controller's lease and the fence it
implies; `cmd` ping. Thousands share one event loop (protofleet.py) - a load generator for the
controller, the registry and the broker (tools/bench/scale.py), not a model of a board's timing.

Nothing here is inferred: a result's label is drawn at random, and its truth with it.
"""
import asyncio
import random
import time
from collections import OrderedDict

from edgefleet.boards import catalog
from edgefleet.firmware import protocol
from edgefleet.firmware.errors import MQTTError, ProtocolError
from edgefleet.firmware.mqtt import MQTTClient

MAX_INFLIGHT = 8
OUTBOX_RECORDS = 20000
LEASE_K = 3
RESULT_BYTES_GUESS = 200


_caps = {}


def board_caps(board):
    """What a board's profile says it has, and the bundled model on its flash (read once per board)."""
    if board not in _caps:
        profile = catalog.load(board)
        _caps[board] = {"heap": profile["heap_bytes"], "flash": profile["fs_bytes"], "backends": ["engine"],
                        "models": ["digits_dense"]}
    return dict(_caps[board])


class NodeStats:
    """What a fleet of ProtoNodes counts together (one event loop: no lock needed)."""

    def __init__(self):
        self.results_made = 0
        self.results_sent = 0      # publishes the broker acknowledged (first sends and re-sends)
        self.results_acked = 0     # results an ack from the controller covered
        self.hb_sent = 0
        self.connects = 0
        self.ack_latency_s = []    # result made -> covered by an ack, first deliveries only
        self.bad_messages = 0      # controller messages decode() rejected
        self.fenced_heartbeats = 0


class ProtoNode:
    def __init__(self, node_id, host, port, prefix=protocol.DEFAULT_PREFIX, board="rpi-pico-w", runtime="micropython",
                 boot=1, hb_s=1.0, keepalive=10, stats=None, seed=None, caps=None):
        self.id = node_id
        self.host, self.port = host, port
        self.prefix = prefix
        self.board, self.runtime = board, runtime
        self.boot = boot
        self.hb_s = hb_s
        self.keepalive = keepalive
        self.stats = stats or NodeStats()
        self.rng = random.Random(seed if seed is not None else node_id)
        self.caps = caps or board_caps(board)
        self.started = time.monotonic()
        self.born = time.time()   # the wall-clock instant `up` counts from (benchmarks time results by it)
        self.hb_seq = 0
        self.seq = 0
        self.outbox = OrderedDict()   # seq -> (payload, made at (time.time()), sent before)
        self.made = {}                # seq -> (workload, stream position): what a test checks against
        self.dropped = 0
        self.epoch = -1
        self.workloads = {}           # id -> {"spec", "pos", "n", "state", "next_at"}
        self.lease_seen = False
        self.lease_missed = 0
        self.fenced = False
        self._lease_since_fence = False
        self._resend = asyncio.Event()
        self._replay = False
        self._down_until = 0.0
        self.inferring = True   # False: no new results (a benchmark's or test's quiet end)
        self._stop = None
        self.client = None
        self.connected = False

    def _topic(self, kind):
        return protocol.node_topic(self.prefix, self.id, kind)

    def up_ms(self):
        return int((time.monotonic() - self.started) * 1000)

    # -- the link --------------------------------------------------------------------------------

    async def run(self, stop, connect_delay_s=0.0):
        """Connect, speak, reconnect with backoff after a drop, until `stop` is set."""
        self._stop = stop
        self._resend = asyncio.Event()   # bound to the loop that runs the node
        await asyncio.sleep(connect_delay_s)
        inferring = asyncio.ensure_future(self._infer())
        try:
            await self._sessions(stop)
        finally:
            inferring.cancel()

    async def _sessions(self, stop):
        backoff = 0.5
        while not stop.is_set():
            try:
                await self._session()
                backoff = 0.5
            except (MQTTError, OSError, asyncio.TimeoutError):
                pass
            self.connected = False
            if not stop.is_set():
                wait_s = max(backoff * (0.5 + self.rng.random()), self._down_until - time.monotonic())
                try:
                    await asyncio.wait_for(stop.wait(), wait_s)
                except asyncio.TimeoutError:
                    pass
                backoff = min(backoff * 2, 8.0)

    async def _session(self):
        client = self.client = MQTTClient(self.id, self.host, self.port, keepalive=self.keepalive,
                                          on_message=self._on_message)
        client.set_will(self._topic("status"), self._status("offline"), qos=1, retain=True)
        await client.connect()
        self.stats.connects += 1
        try:
            for kind in ("assign", "ack", "cmd"):
                await client.subscribe(self._topic(kind), qos=1)
            await client.subscribe(protocol.ctrl_topic(self.prefix), qos=1)
            await client.subscribe(protocol.lease_topic(self.prefix), qos=0)
            await client.publish(self._topic("hello"), self._hello(), qos=1)
            await client.publish(self._topic("status"), self._status("online"), qos=1, retain=True)
            self.connected = True
            self._resend.set()
            tasks = [asyncio.ensure_future(t) for t in (self._heartbeats(client), self._deliver(client))]
            closed = asyncio.ensure_future(client.wait_closed())
            stopped = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait(tasks + [closed, stopped], return_when=asyncio.FIRST_COMPLETED)
            for t in tasks + [closed, stopped]:
                t.cancel()
            ended = await asyncio.gather(*tasks, closed, stopped, return_exceptions=True)
            for outcome in ended:   # a task that died of a bug says so, rather than a silent node
                if isinstance(outcome, Exception) and not isinstance(
                        outcome, (MQTTError, OSError, asyncio.TimeoutError, asyncio.CancelledError)):
                    raise outcome
        finally:
            if self._stop.is_set() and client.is_connected:
                await client.disconnect()
            else:
                await client.abort()

    async def crash(self, down_s=0.0):
        """Drop the link without DISCONNECT (the broker publishes the Last Will); connect again
        after `down_s` (a board losing power, its outbox kept on flash)."""
        self._down_until = time.monotonic() + down_s
        if self.client is not None:
            await self.client.abort()

    # -- what the node sends ---------------------------------------------------------------------

    def _hello(self):
        return protocol.encode("hello", {"v": protocol.VERSION, "node": self.id, "board": self.board,
                                         "runtime": self.runtime, "fw": "0.1.0", "boot": self.boot, "caps": self.caps})

    def _status(self, state):
        return protocol.encode("status", {"v": protocol.VERSION, "node": self.id, "state": state, "boot": self.boot})

    def _heartbeat(self):
        self.hb_seq += 1
        outbox = {"records": len(self.outbox), "bytes": len(self.outbox) * RESULT_BYTES_GUESS,
                  "dropped": self.dropped, "last": [self.boot, self.seq]}
        if self.outbox:
            outbox["oldest"] = [self.boot, next(iter(self.outbox))]
        hb = {"v": protocol.VERSION, "node": self.id, "boot": self.boot, "seq": self.hb_seq, "up": self.up_ms(),
              "cpu": round(5 + 10 * self.rng.random(), 1), "mem_free": self.caps["heap"] // 2, "mem_total": self.caps["heap"],
              "power": {"src": "mains", "pct": None, "mw": None}, "temp": None,
              "wl": [{"id": wid, "state": w["state"], "n": w["n"], "err": None} for wid, w in self.workloads.items()],
              "outbox": outbox, "state": "online"}
        if self.lease_seen:
            hb["fenced"] = self.fenced
        return protocol.encode("hb", hb)

    async def _heartbeats(self, client):
        while True:
            if self.lease_seen:
                self.lease_missed += 1
                if self.lease_missed > LEASE_K and not self.fenced:
                    self.fenced, self._lease_since_fence = True, False
            await client.publish(self._topic("hb"), self._heartbeat(), qos=0)
            self.stats.hb_sent += 1
            if self.fenced:
                self.stats.fenced_heartbeats += 1
            await asyncio.sleep(self.hb_s * (0.9 + 0.2 * self.rng.random()))

    async def _infer(self):
        """Each running workload makes a result every 1/rate s into the outbox, connected or not:
        the outbox is what carries them over a drop."""
        while True:
            now = time.monotonic()
            wake = now + 1.0
            for wid, w in list(self.workloads.items()):
                if w["state"] != "running" or not self.inferring:
                    continue
                while w["next_at"] <= now and w["state"] == "running":
                    until = w["spec"]["input"].get("until")
                    if until is not None and w["pos"] >= until:
                        w["state"] = "done"
                        break
                    self._make_result(wid, w)
                    w["next_at"] += 1.0 / w["spec"]["rate"]
                wake = min(wake, w["next_at"])
            await asyncio.sleep(max(0.0, wake - time.monotonic()))

    def _make_result(self, wid, w):
        self.seq += 1
        label = self.rng.randrange(10)
        msg = {"v": protocol.VERSION, "node": self.id, "boot": self.boot, "seq": self.seq, "wl": wid,
               "up": self.up_ms(), "label": label, "score": round(self.rng.random(), 4), "us": 12000,
               "truth": label if self.rng.random() < 0.9 else (label + 1) % 10, "in": w["pos"]}
        self.made[self.seq] = (wid, w["pos"])
        w["pos"] += 1
        w["n"] += 1
        self.outbox[self.seq] = (protocol.encode("result", msg), time.time(), False)
        self.stats.results_made += 1
        if len(self.outbox) > OUTBOX_RECORDS:   # full flash: the oldest goes, the heartbeat says so
            self.outbox.popitem(last=False)
            self.dropped += 1
        self._resend.set()

    async def _deliver(self, client):
        """Publish the outbox in order, from the oldest unacknowledged again whenever asked to (a
        connect, the controller back online, the fence lifted), at most MAX_INFLIGHT at once."""
        slots = asyncio.Semaphore(MAX_INFLIGHT)
        sent_up_to = 0
        inflight = set()

        async def send(seq, payload):
            try:
                await client.publish(self._topic("result"), payload, qos=1)
                self.stats.results_sent += 1
                if seq in self.outbox:
                    entry = self.outbox[seq]
                    self.outbox[seq] = (entry[0], entry[1], True)
            except MQTTError:
                pass   # the link went: the result stays in the outbox for the next connection
            finally:
                slots.release()

        while True:
            await self._resend.wait()
            self._resend.clear()
            if self.fenced:
                continue
            if self._replay and self.outbox:
                sent_up_to = min(sent_up_to, next(iter(self.outbox)) - 1)
            self._replay = False
            for seq in [s for s in self.outbox if s > sent_up_to]:
                if self.fenced:
                    break
                if seq not in self.outbox:   # acknowledged meanwhile
                    continue
                await slots.acquire()
                task = asyncio.ensure_future(send(seq, self.outbox[seq][0]))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                sent_up_to = seq

    def _replay_from_oldest(self):
        self._replay = True
        self._resend.set()

    # -- what the node hears ---------------------------------------------------------------------

    def _on_message(self, topic, payload, retain, qos):
        try:
            if topic == protocol.lease_topic(self.prefix):
                protocol.decode("lease", payload)
                self.lease_seen, self.lease_missed = True, 0
                self._lease_since_fence = True
                return
            if topic == protocol.ctrl_topic(self.prefix):
                msg = protocol.decode("ctrl_status", payload)
                if msg["state"] == "online":
                    self._replay_from_oldest()
                elif self.fenced:    # no controller: nothing can move, the fence lifts
                    self.fenced = False
                    self._replay_from_oldest()
                return
            kind = topic.rsplit("/", 1)[1]
            msg = protocol.decode(kind, payload)
            getattr(self, "_on_" + kind)(msg)
        except ProtocolError:
            self.stats.bad_messages += 1

    def _on_ack(self, msg):
        if msg["boot"] != self.boot:
            return
        now = time.time()
        while self.outbox and next(iter(self.outbox)) <= msg["seq"]:
            _, (payload, made_at, _sent) = self.outbox.popitem(last=False)
            self.stats.results_acked += 1
            self.stats.ack_latency_s.append(now - made_at)

    def _on_assign(self, msg):
        if msg["epoch"] < self.epoch:
            return
        self.epoch = msg["epoch"]
        wanted = {spec["id"]: spec for spec in msg["wl"]}
        for wid in list(self.workloads):
            if wid not in wanted:
                del self.workloads[wid]
        now = time.monotonic()
        for wid, spec in wanted.items():
            running = self.workloads.get(wid)
            retune = running is not None and {k: v for k, v in running["spec"].items() if k != "input"} == \
                {k: v for k, v in spec.items() if k != "input"} and \
                running["spec"]["input"].get("start") == spec["input"].get("start")
            if retune:   # only the hand-over point moved
                running["spec"] = spec
                if running["state"] == "done" and (spec["input"].get("until") is None
                                                   or running["pos"] < spec["input"]["until"]):
                    running["state"] = "running"
                continue
            self.workloads[wid] = {"spec": spec, "pos": spec["input"].get("start", 0), "n": 0, "state": "running",
                                   "next_at": now + 1.0 / spec["rate"]}
        if self.fenced and self._lease_since_fence:
            self.fenced = False
            self._replay_from_oldest()

    def _on_cmd(self, msg):
        if msg["op"] == "ping":
            reply = {"v": protocol.VERSION, "id": msg["id"], "ok": True, "data": {"up": self.up_ms()}}
        else:
            reply = {"v": protocol.VERSION, "id": msg["id"], "ok": False, "error": "unknown op %r" % msg["op"]}
        if self.client is not None and self.client.is_connected:
            asyncio.ensure_future(self._publish_quietly("reply", protocol.encode("reply", reply)))

    async def _publish_quietly(self, kind, payload):
        try:
            await self.client.publish(self._topic(kind), payload, qos=1)
        except MQTTError:
            pass   # the link went; a cmd's reply is not kept across it
