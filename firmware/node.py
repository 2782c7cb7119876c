# The node runtime: boots from the config on flash, keeps its MQTT link up, runs the assigned
# inference workloads and reports. Workloads never wait for the link: a node without broker or
# controller keeps inferring from the assignment it cached on flash.
#
# Supervision tree (firmware/supervisor.py):
#   node (one_for_one): link, delivery, heartbeats, workers
#     workers (one_for_one): one InferenceWorker per assigned workload
# The hardware watchdog is fed only while the node supervisor and its critical children beat in
# time, never because of the link; so a hung event loop or a service that keeps failing resets
# the board, and being offline never does.
#
# Helpers, loaded only when needed and released after (firmware/__init__.py release_module):
# bootguard (the boot sequence), assignment (comparing assignments), commands, faults, crashlog,
# health (the tentative boot after an update) and ota (OtaAgent). None imports this module;
# they see a Node through this surface:
#   calls   event(), queue(), online(), uptime_ms(), hello(), reboot_soon(why, stable),
#           apply_assignment(); and its hal (boards/hal.py's interface)
# worker.py also starts workers for the node (start(), hold_for_resume()) and takes their
# results (emit_result()): it reads cfg, runtime, hal, sup_cfg, held_from_cache, id, boot and the
# workers, numbers results (result_seq) into the outbox, and registers workers with workers_sup.
#   reads   id, boot, runtime, cfg, data_dir, sup_cfg, state, degraded, safe_mode, reset_info,
#           workers, supervisor (health and faults look at the workers and the tree)
#   writes  only bootguard.start, the boot sequence kept out of this module to spare the heap
#           it would hold for good: boot, reset_info, backends, safe_mode, state, recovered (it
#           also starts the load meter and recovers the outbox)
import asyncio
import sys

from . import console, flashfile, protocol, release_module
from .clock import ticks_diff, ticks_ms
from .errors import FirmwareError, ProtocolError
from .lease import Lease
from .loadmeter import LoadMeter
from .mqtt import MQTTClient, MQTTError
from .outbox import Outbox, OutboxError
from .supervisor import ONE_FOR_ONE, Child, Supervisor

# Events and replies kept in RAM while the link is down; the oldest are dropped past this.
# (Results go to the flash outbox instead.)
PENDING_LIMIT = 64
# Results published at once while delivering from the outbox (bounded QoS1 in flight), unless
# the profile's outbox says otherwise: each in flight holds ~1.5 KB of heap while it waits.
DELIVERY_WINDOW = 8
# Link retries: doubling, capped so that a fleet serves again within seconds of its broker's
# return (a dead broker sees one CONNECT per node every second or two: cheap).
BACKOFF_MIN_MS = 500
BACKOFF_MAX_MS = 2000
LINK_BEAT_TIMEOUT_MS = 90000
# The longest one publish waits for the broker (firmware/mqtt.py MQTTClient.publish's timeout).
PUBLISH_WAIT_MS = 10000
# Supervision settings; a node's config may override any of them under "supervision".
SUPERVISION = {
    "intensity": 5, "period_ms": 60000, "backoff_min_ms": 100, "backoff_max_ms": 30000,
    # A worker silent this long is hung (it beats from its inference loop); its first beat after
    # a (re)start may take worker_start_ms (an inference process loading its interpreter).
    "worker_beat_ms": 3000, "worker_start_ms": 30000,
    "service_beat_ms": 10000, "watchdog_ms": 8000,
    "stable_after_ms": 300000, "quick_boot_limit": 3,
}


def _log(msg):
    console.say("edgefleet-node: " + msg)


class Node:
    def __init__(self, cfg, hal):
        self.cfg = cfg
        self.hal = hal
        self.id = cfg["node"]
        self.prefix = cfg["topic_prefix"]
        self.profile = cfg["profile"]
        # "micropython" or "cpython": the board profile says which (firmware/config.py checks it).
        self.runtime = self.profile["runtime"]
        self.data_dir = cfg["data_dir"]
        self.models_dir = cfg["models_dir"]
        self.boot = 0
        self.state = "online"
        self.started_ms = ticks_ms()
        self.meter = LoadMeter()
        self.client = None
        self.workers = {}
        self.applied_epoch = None
        self.result_seq = 0
        self.recovered = {}
        self.hb_seq = 0
        self.pending = []
        self.dropped = 0
        self.bad = 0   # messages rejected (bad_message)
        self.heap_low = None   # note_heap(): the lowest free heap since the last heartbeat
        box = self.profile.get("outbox", {})
        self.outbox = Outbox(self.data_dir + "/outbox", box.get("capacity_bytes", 65536),
                             box.get("segment_bytes", 4096), box.get("flush_records", 8))
        self.flush_ms = box.get("flush_ms", 200)
        self.delivery_window = box.get("delivery_window", DELIVERY_WINDOW)
        self._outbox_error = None
        self._cpu = 0.0
        # Read only: a node without overrides shares the defaults instead of holding a copy.
        sup = SUPERVISION
        if cfg.get("supervision"):
            sup = dict(SUPERVISION)
            sup.update(cfg["supervision"])
        self.sup_cfg = sup
        limits = {"intensity": sup["intensity"], "period_ms": sup["period_ms"],
                  "backoff_min_ms": sup["backoff_min_ms"], "backoff_max_ms": sup["backoff_max_ms"],
                  "on_exit": self.child_exited, "on_escalate": self.escalate}
        # one_for_one: the link, delivery, heartbeats and workers share no state but what they
        # read afresh (the client, the outbox), so a failed child restarts alone; in particular,
        # link trouble never restarts inference (docs/supervision.md).
        self.supervisor = Supervisor("node", ONE_FOR_ONE, **limits)
        self.workers_sup = Supervisor("workers", ONE_FOR_ONE, **limits)
        self.assigned = []   # workload specs of the applied assignment, in order
        self.backends = []
        self.reset_info = {}
        self.stable = False
        self.crashes_unsent = True   # until checked on the first link
        self.safe_mode = False
        self.degraded = None
        self.watchdog_starving = None
        self.held_from_cache = False  # the applied assignment came from flash at boot
        self.holding = False          # the workers wait for the controller's (run_workers)
        self._ota = None
        # Fencing (firmware/lease.py): results wait in the outbox while the controller's lease is lost.
        self.lease = Lease(cfg.get("lease_k", 3))

    # -- identity ---------------------------------------------------------------------------

    def uptime_ms(self):
        return ticks_diff(ticks_ms(), self.started_ms)

    def topic(self, kind):
        return protocol.node_topic(self.prefix, self.id, kind)

    def models_on_flash(self):
        import os
        try:
            names = os.listdir(self.models_dir)
        except OSError:
            return []
        names.sort()
        return names

    def hello(self):
        msg = {
            "v": protocol.VERSION, "node": self.id, "board": self.cfg["board"], "runtime": self.runtime,
            "fw": self.cfg["fw"], "boot": self.boot,
            "caps": {
                "heap": self.profile.get("heap_bytes", 0), "flash": self.profile.get("fs_bytes", 0),
                "backends": self.backends, "models": self.models_on_flash(),
                "labels": self.cfg.get("labels", []),
                # What a `sensor` input can read here (placement puts such workloads only here).
                "sensors": sorted(self.profile.get("sensors", {})),
                # Whether a `camera` input can run here (a Linux board whose profile has one).
                "camera": "camera" in self.profile,
                # Whether this link is encrypted: placement reserves the heap TLS holds on an MCU,
                # and `status` shows which nodes talk in plaintext.
                "tls": self.cfg["broker"]["tls"],
                # Code run in place from ROM leaves more heap for models (placement.py).
                "code": "romfs" if "/rom" in sys.path else "files",
                # The interpreter's word size: objects on a 64-bit one (a simulated board on a
                # PC) take up to twice a 32-bit board's heap, so placement reads the heap
                # figures measured at this size.
                "word": 64 if sys.maxsize > 2147483647 else 32,
            },
        }
        if self.cfg.get("slot"):
            msg["slot"] = self.cfg["slot"]
        return msg

    def status(self, state):
        return {"v": protocol.VERSION, "node": self.id, "state": state, "boot": self.boot}

    def online(self):
        """Whether the link to the broker is up now."""
        return self.client is not None and self.client.is_connected

    # -- outgoing messages ------------------------------------------------------------------

    def queue(self, kind, msg):
        try:
            payload = protocol.encode(kind, msg)
        except ProtocolError as e:
            _log("dropping bad outgoing %s: %s" % (kind, e))
            return
        if len(self.pending) >= PENDING_LIMIT:
            self.pending.pop(0)
            self.dropped += 1
        self.pending.append((kind, payload))

    def event(self, level, kind, msg, data=None):
        _log("%s %s: %s" % (level, kind, msg))
        ev = {"v": protocol.VERSION, "node": self.id, "boot": self.boot, "up": self.uptime_ms(),
              "level": level, "kind": kind, "msg": msg}
        if data is not None:
            ev["data"] = data
        self.queue("event", ev)

    def outbox_failed(self, error):
        # A full or failing flash: keep inferring; records stay buffered in RAM up to a bound,
        # then the oldest are counted as dropped. Reported once per distinct error.
        buffered = self.outbox.buffer
        while len(buffered) > PENDING_LIMIT:
            buffered.pop(0)
            self.outbox.dropped += 1
        if str(error) != self._outbox_error:
            self._outbox_error = str(error)
            self.event("error", "outbox_write_failed", str(error))

    async def deliver_results(self, child):
        """Publish what is queued in RAM, flush the outbox on its timer and publish the results
        the controller has not acknowledged."""
        while True:
            child.beat()
            await self.publish_pending(child)
            if (console.count or console.dropped) and self.online():
                # Console lines wait in the ring (firmware/console.py); the code that sends
                # them is loaded only while they do.
                try:
                    from . import logship
                    await logship.send(self)
                except MemoryError:
                    pass   # no heap to send them now: they wait, or are dropped, in the ring
            try:
                self.outbox.flush()
                self._outbox_error = None
            except OutboxError as e:
                self.outbox_failed(e)
            client = self.client
            batch = []
            # While an update comes in, results wait on flash, where they are safe: the heap
            # their delivery would hold goes to the transfer (a small board has room for one).
            receiving = self._ota is not None and self._ota.receiver.reader is not None
            if self.online() and not self.lease.fenced and not receiving:
                batch = self.outbox.next_batch(self.delivery_window)
            if not batch:
                await asyncio.sleep(self.flush_ms / 1000)
                continue
            topic = self.topic("result")
            try:
                await asyncio.gather(*[client.publish(topic, payload, 1, False) for _, _, _, payload in batch])
            except MQTTError:
                # The link task reconnects, and every (re)connect rewinds the outbox cursor.
                await asyncio.sleep(self.flush_ms / 1000)

    async def publish_pending(self, child):
        """Events, replies and status changes queued in RAM, oldest first, while the link is up."""
        while self.pending and self.online():
            kind, payload = self.pending[0]
            qos, retain = protocol.delivery(kind)
            try:
                await self.client.publish(self.topic(kind), payload, qos, retain)
            except MQTTError:
                return  # the link task reconnects; the message stays queued
            self.pending.pop(0)
            child.beat()

    # -- incoming messages ------------------------------------------------------------------

    def note_heap(self):
        # The lowest free heap between two heartbeats, garbage included: the runtime's peak,
        # which the board profile's budget must cover (placement reserves it beside models).
        free = self.hal.heap_free_now()
        if free is not None and (self.heap_low is None or free < self.heap_low):
            self.heap_low = free

    def on_message(self, topic, payload, retain, qos):
        self.note_heap()
        try:
            node, kind = protocol.parse_topic(self.prefix, topic)
            if node != self.id and kind not in ("ctrl_status", "lease", "input"):
                raise ProtocolError("message for node %r on our subscription" % node)
            msg = protocol.decode(kind, payload)
            if kind == "input":
                # An input of a topic workload (firmware/source_topic.py): `node` is the
                # workload. One that stopped here a moment ago has none to take it.
                worker = self.workers.get(node)
                if worker is not None and hasattr(worker.source, "push"):
                    worker.source.push(msg)
            elif kind == "ctrl_status":
                # A controller (re)started: it may have missed results the broker took while it
                # was away, so deliver again from the oldest unacknowledged one.
                if msg["state"] == "online":
                    self.outbox.rewind()
                    if not retain:
                        # A controller that started after this link did never saw our hello
                        # (and ignores heartbeats without one). The retained copy at subscribe
                        # time needs none: connect_once has just said hello.
                        self.queue("hello", self.hello())
                else:
                    self.lease.release()
            elif kind == "lease":
                self.lease.renew()
            elif kind == "assign":
                self.apply_assignment(msg)
                if self.lease.confirm():
                    self.event("info", "unfenced", "lease back and assignment epoch %d confirmed" % msg["epoch"])
                    self.outbox.rewind()
            elif kind == "ack":
                self.on_ack(msg)
            elif kind == "cmd":
                self.on_command(msg)
            elif kind == "ota":
                self.ota_agent().handle(msg)
        except Exception as e:  # noqa: BLE001 - whatever one message does, it is rejected alone
            # Reported at the 1st, 2nd, 4th, 8th... rejection since boot: a flood of bad input
            # must not become a flood of events.
            self.bad += 1
            if not self.bad & (self.bad - 1):
                self.event("warn", "bad_message", repr(e), {"topic": topic, "count": self.bad})
        self.note_heap()

    def on_ack(self, msg):
        boot, seq = msg["boot"], msg["seq"]
        known = self.result_seq if boot == self.boot else self.recovered.get(boot)
        if known is None or seq > known:
            self.event("warn", "bad_ack", "ack for result %d of boot %d, which this node never sent" % (seq, boot),
                       {"boot": boot, "seq": seq})
            return
        self.outbox.ack(boot, seq)

    def on_command(self, msg):
        # Commands are rare; their code is loaded for each one and released again.
        from . import commands
        try:
            reply = commands.handle(self, msg)
        finally:
            release_module(commands)
        self.queue("reply", reply)

    def ota_agent(self):
        # Updates (docs/ota.md): the receive logic loads only once an update starts.
        if self._ota is None:
            from .ota import OtaAgent
            self._ota = OtaAgent(self)
        return self._ota

    async def reboot_soon(self, why, stable=False):
        """Reboot the board on purpose: recorded first, so the next boot neither counts it
        towards safe mode nor mistakes it for a fault. stable: the operator vouches for the
        code on flash, so the next boot starts a fresh count."""
        if stable:
            self.stable = True
        self.write_boot_record("reboot", why)
        await asyncio.sleep(0.3)  # let the reply go out
        self.hal.reboot()

    # -- workloads --------------------------------------------------------------------------

    def apply_assignment(self, msg, from_cache=False):
        # Assignments change rarely (a placement decision); the logic that compares them is
        # loaded for each one and released again.
        from . import assignment
        try:
            if not assignment.accept(self.applied_epoch, msg):
                return
            running = {}
            for spec in self.assigned:
                running[spec["id"]] = spec
            stop, start = assignment.changes(running, msg["wl"])
            retuned = assignment.retuned(running, msg["wl"])
        finally:
            release_module(assignment)
        del assignment
        if not from_cache:
            # First: a flash that refuses it rejects the message with nothing changed.
            flashfile.write(self.data_dir + "/assign.json", msg)
        self.assigned = list(msg["wl"])
        for spec in retuned:
            worker = self.workers.get(spec["id"])
            if worker is not None:
                worker.spec = worker.assigned = spec  # a live migration's hand-over point
                if hasattr(worker.source, "until"):   # a topic source stops serving there too
                    worker.source.until = spec["input"].get("until")
        for wid in stop:
            self.stop_worker(wid)
        # In safe mode the assignment is kept (on flash too) but nothing runs until the node
        # leaves safe mode; the workers supervisor starts what is assigned when it (re)starts
        # (or, at boot, once the controller has said where the cached streams resume).
        if from_cache:
            self.held_from_cache = bool(self.assigned)
        elif msg["epoch"] != self.applied_epoch:
            # The controller's word after this boot (the broker's retained copy of the cached
            # assignment, same epoch, does not end the wait).
            self.held_from_cache = False
        if not self.safe_mode and self.supervisor.child("workers") is not None and not self.holding:
            for spec in start:
                self.start_worker(spec)
        self.recheck_degraded()
        self.applied_epoch = msg["epoch"]
        if stop or start:
            self.event("info", "assigned", "epoch %d: %d running, started %s, stopped %s" % (
                msg["epoch"], len(self.workers), [s["id"] for s in start], stop))

    def start_worker(self, spec):
        # Loaded with the first workload: a board that runs none (it holds no model that fits)
        # keeps the worker, backend and input-stream code out of its heap.
        from . import worker
        worker.start(self, spec)

    def stop_worker(self, wid):
        self.workers_sup.terminate_child(wid)
        worker = self.workers.pop(wid, None)
        if worker is not None:
            worker.stop()

    # -- telemetry --------------------------------------------------------------------------

    def cpu_percent(self):
        cpu = self.hal.cpu_percent()
        busy = self.meter.sample()
        if cpu is None:
            cpu = busy
        extra = self.hal.extra_load()   # a simulated board's injected load
        if extra:
            cpu = min(100.0, cpu + extra)
        return cpu

    def heartbeat(self):
        self.hb_seq += 1
        self.note_heap()
        free, total = self.hal.mem()
        self._cpu = self.cpu_percent()
        wl = []
        for wid in sorted(self.workers):
            wl.append(self.workers[wid].report())
        temp = self.hal.temperature()
        hb = {"v": protocol.VERSION, "node": self.id, "boot": self.boot, "seq": self.hb_seq,
              "up": self.uptime_ms(), "cpu": self._cpu, "mem_free": free, "mem_total": total,
              "power": self.hal.power(self._cpu), "temp": temp, "wl": wl, "outbox": self.outbox_report(),
              "state": self.state}
        if self.lease.beat():
            self.event("warn", "fenced", "no controller lease for %d heartbeats: results wait in the outbox" % self.lease.missed)
        if self.lease.held:
            hb["fenced"] = self.lease.fenced
        if self.heap_low is not None:
            hb["mem_low"] = self.heap_low
            self.heap_low = None
        return hb

    def outbox_report(self):
        box = self.outbox
        report = {"records": box.records, "bytes": box.stats()["bytes"], "dropped": box.dropped,
                  "last": [self.boot, self.result_seq]}
        oldest = box.oldest()
        if oldest is not None:
            report["oldest"] = [oldest[0], oldest[1]]
        return report

    async def send_heartbeats(self, child):
        interval = self.cfg["hb_interval_ms"]
        while True:
            child.beat()
            # A simulated board can jitter its heartbeats (boards/hal_sim.py, sim.json hb_jitter).
            await asyncio.sleep((self.hal.heartbeat_delay_ms(interval) or interval) / 1000)
            hb = self.heartbeat()
            if not self.online():
                continue
            try:
                await self.client.publish(self.topic("hb"), protocol.encode("hb", hb), 0, False)
            except MQTTError:
                pass  # the link task sees the closed connection and reconnects

    # -- the link ---------------------------------------------------------------------------

    async def connect_once(self, child):
        # The link's objects live as long as it does: collected first, they pack into the low
        # end of the heap instead of splitting the free space a workload needs later.
        import gc
        gc.collect()
        b = self.cfg["broker"]
        tls = None
        if b["tls"]:
            from .tlslink import client_context
            tls = client_context(b["ca"])
        client = MQTTClient(self.id, b["host"], b["port"], user=b["user"], password=b["password"],
                            keepalive=b["keepalive"], on_message=self.on_message,
                            tls=tls, server_hostname=b["server_name"], max_packet=4352,  # 4 KB + topic
                            payload_limit=protocol.limit, on_tick=child.beat)
        client.set_will(self.topic("status"), protocol.encode("status", self.status("offline")), 1, True)
        await client.connect()
        self.client = client
        for kind in protocol.CONTROLLER_SENDS:
            await client.subscribe(self.topic(kind), 1)
        await client.subscribe(protocol.ctrl_topic(self.prefix), 1)
        await client.subscribe(protocol.lease_topic(self.prefix), 0)
        self.outbox.rewind()
        await client.publish(self.topic("status"), protocol.encode("status", self.status(self.state)), 1, True)
        await client.publish(self.topic("hello"), protocol.encode("hello", self.hello()), 1, False)
        return client

    async def keep_link(self, child):
        backoff = BACKOFF_MIN_MS
        while True:
            child.beat()
            try:
                # A board on Wi-Fi joins its network first, and again once it dropped (a join
                # polls without blocking the loop; the HAL spaces failed joins out itself, and
                # its error names the network and why: "Wi-Fi 'lab': wrong password ...").
                up = await self.hal.net_up(self.cfg.get("wifi"), self.id)
                if up:
                    _log("network up, address %s" % up)
                child.beat()
                client = await self.connect_once(child)
            except (FirmwareError, OSError, MemoryError) as e:
                # A heap too full to open a link now is a reason to retry, not to stop: the
                # workloads and the outbox go on without the link. So is a missing CA file or
                # a broker that fails verification, or a network that cannot be joined:
                # inference and the outbox go on meanwhile.
                _log("broker %s:%d unreachable (%s); retry in %d ms" % (
                    self.cfg["broker"]["host"], self.cfg["broker"]["port"], e, backoff))
                self.client = None
                await asyncio.sleep(_jitter(backoff) / 1000)
                backoff = min(backoff * 2, BACKOFF_MAX_MS)
                continue
            backoff = BACKOFF_MIN_MS
            _log("connected to %s:%d, %d bytes free" % (self.cfg["broker"]["host"], self.cfg["broker"]["port"],
                                                        self.hal.mem()[0]))
            self.publish_crash_records()
            # The link's keepalive loop beats for this child while the link is up (on_tick, about
            # once a second): a timed wait here instead would hold a task, a runner and their
            # frames (~800 bytes) for as long as the link lasts.
            await client.wait_closed()
            _log("link lost: %s" % (client.last_error,))
            self.client = None

    # -- supervision ---------------------------------------------------------------------------

    def service_specs(self):
        beat = self.sup_cfg["service_beat_ms"]
        return [
            # Not critical: a link that cannot connect is offline operation, not a fault.
            # Its beats come between tries, and one try may wait on a silent broker for every
            # step of a connect (CONNECT, each SUBSCRIBE: up to 10 s apiece).
            Child("link", self.keep_link, beat_timeout_ms=max(beat, LINK_BEAT_TIMEOUT_MS)),
            # Delivery and heartbeats wait on the network between beats, up to the MQTT client's
            # publish timeout: waiting for a dead broker is not a hang (the wait fails by itself),
            # and a child declared hung for it would be restarted, and the watchdog starved, for
            # a network fault.
            Child("delivery", self.deliver_results, beat_timeout_ms=beat + PUBLISH_WAIT_MS, critical=True),
            Child("heartbeats", self.send_heartbeats, beat_timeout_ms=beat + PUBLISH_WAIT_MS, critical=True),
            Child("workers", self.run_workers, beat_timeout_ms=beat, critical=True,
                      kill=self.workers_sup.terminate_all),
        ]

    async def run_workers(self, child):
        """The workers supervisor, itself a child: (re)starts the assigned workers and watches them."""
        self.workers_sup.terminate_all()
        if self.held_from_cache:
            from . import worker
            await worker.hold_for_resume(self, child)
        if not self.safe_mode:
            for spec in self.assigned:
                self.start_worker(spec)
        await self.workers_sup.run(child.beat)

    def child_exited(self, child, how, error):
        if how == "normal":
            return
        from . import crashlog
        try:
            if not crashlog.record(self, child, how, error):
                self.crashes_unsent = True
        finally:
            release_module(crashlog)

    def publish_crash_records(self):
        """Crash records written while offline or before a reset, once a link is up."""
        if not self.crashes_unsent:
            return
        self.crashes_unsent = False
        from . import crashlog
        try:
            crashlog.publish(self)
        finally:
            release_module(crashlog)

    def write_boot_record(self, cause=None, detail=None):
        """Record on flash the reset this node is about to cause, or that this boot is stable."""
        from . import bootguard
        try:
            bootguard.write(self.data_dir, self.boot, self.reset_info["quick_boots"], self.stable, cause, detail)
        finally:
            release_module(bootguard)

    def escalate(self, child, reason):
        """A child restarted too often: give it up and tell the controller this node is degraded."""
        self.degraded = "%s: %s" % (child.id, reason)
        self.event("error", "degraded", "gave up %s" % self.degraded, {"child": child.id})
        self.set_state("degraded")

    def set_state(self, state):
        if state != self.state:
            self.state = state
            self.queue("status", self.status(state))

    def recheck_degraded(self):
        # Degraded lasts while a given-up child remains; removing it (the controller moved its
        # workload away) makes the node whole again.
        given_up = [c for c in self.workers_sup.children + self.supervisor.children if c.state == "failed"]
        if self.degraded is not None and not given_up:
            self.degraded = None
            self.set_state("safe" if self.safe_mode else "online")

    async def feed_watchdog(self):
        """Feed the hardware watchdog while the supervision tree is healthy; record why before
        letting it bite. Without a hardware watchdog the node resets itself the same way."""
        timeout = self.hal.watchdog_start(self.sup_cfg["watchdog_ms"])
        limit = timeout or self.sup_cfg["watchdog_ms"]
        interval = min(1000, limit // 4)
        starving_since = None
        while True:
            fresh, why = self.supervisor.critical_fresh()
            if fresh:
                if starving_since is not None:
                    # Recovered before the watchdog bit: the reset recorded for it will not
                    # happen, and a later power cut must not read as a watchdog reset.
                    _log("watchdog: children beat again; feeding it")
                    self.watchdog_starving = None
                    self.write_boot_record()
                starving_since = None
                self.hal.watchdog_feed()
            elif starving_since is None:
                starving_since = ticks_ms()
                self.watchdog_starving = why
                _log("watchdog: %s; no longer feeding it" % why)
                self.write_boot_record("watchdog", why)
                try:
                    self.outbox.flush()   # what the node accepted survives the reset
                except OutboxError:
                    pass
            elif timeout is None and ticks_diff(ticks_ms(), starving_since) > limit:
                self.hal.reboot()
            if not self.stable and self.uptime_ms() >= self.sup_cfg["stable_after_ms"]:
                self.stable = True
                self.write_boot_record()
            await asyncio.sleep(interval / 1000)

    async def main(self):
        # The boot sequence runs once; its code leaves the heap when it is done.
        from . import bootguard
        guard = bootguard.start(self)
        release_module(bootguard)
        # This coroutine runs for the node's life: a local left naming the module would hold
        # all of its code in the heap for good.
        del bootguard
        for child in self.service_specs():
            self.supervisor.start_child(child)
        asyncio.create_task(self.feed_watchdog())
        if guard:
            asyncio.create_task(self.guard_slot())
        await self.supervisor.run()

    async def guard_slot(self):
        # Done, the guard and the pointer logic leave the heap unless an update's OtaAgent holds them.
        from . import health
        await health.guard(self)
        if self._ota is None:
            release_module(health.slots)
            release_module(health)


def _print_traceback(error):
    if hasattr(sys, "print_exception"):
        sys.print_exception(error)
    else:
        import traceback
        traceback.print_exception(type(error), error, error.__traceback__)


def _jitter(ms):
    import random
    return ms // 2 + random.getrandbits(16) % (ms // 2 + 1)


def boot(config_path, open_hal, slot=None, version=None):
    """Entry point of every node: read the config on flash, open its HAL, run forever.

    slot: the A/B slot folder the boot selector chose (docs/ota.md); its models and version
    replace the config's."""
    from . import config
    cfg = config.load(config_path)
    if slot:
        cfg["slot"], cfg["models_dir"] = slot, slot + "/models"
        cfg["fw"] = version or cfg["fw"]
    if cfg["profile"]["runtime"] == "micropython":
        release_module(config)
    del config
    hal = open_hal(cfg["hal"], cfg["profile"], cfg["hal_options"])
    node = Node(cfg, hal)
    try:
        asyncio.run(node.main())
    except Exception as e:  # the runtime itself failed: record why, then reset like a board
        _log("node runtime failed: %s: %s" % (type(e).__name__, e))
        _print_traceback(e)
        try:
            node.write_boot_record("crash", "%s: %s" % (type(e).__name__, e))
        except (OSError, KeyError):
            pass
        hal.reboot()
