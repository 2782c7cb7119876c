"""The controller as a running service: paho-mqtt in, FleetController decisions, paho-mqtt out.

paho's network thread only queues incoming messages; one controller thread owns the registry
and the FleetController, so no lock is needed around decisions.
"""
import binascii
import json
import logging
import os
import queue
import ssl
import threading
import time
from concurrent.futures import Future

from edgefleet.firmware import protocol
from edgefleet.firmware.errors import ProtocolError

from .. import opwire
from ..errors import BrokerError, ControllerFailed, EdgefleetError, LeadershipLost, NoAnswer, RequestRefused
from ..mqttlink import BrokerLink, connect_error, refusal_error
from ..netutil import BrokerAddress
from ..security.principals import CONTROLLER
from .controller import FleetController
from .effects import Publish
from .follower import Follower
from .leadership import LOOP_STALL_S, FencedRegistry, LeaseKeeper, Leadership
from .retention import RetentionWorker
from ..store import open_registry

log = logging.getLogger(__name__)
TICK_S = 1.0
# Operator requests that only read: not written to the audit log when the dashboard asks them.
READ_OPS = ("status", "events", "logs", "export", "plan")
# Replicas record at most this many node messages in one transaction.
BATCH = 200
RECONNECT_MAX_S = 4
# A leader that cannot reach the fleet (no leases, no assignments get through) lets its lease
# go after this long, and another replica may lead: when its broker connection has been down
# that long, or when a lease it sent that long ago has not come back through the broker, nor any
# sent since (a silent link that paho's keepalive notices only after 1.5 keepalives). The echo
# is taken where paho reads it, not where the decision loop gets to it: a leader far behind on
# a backlog still hears its leases in time.
STEP_DOWN_S = 6.0


class ControllerService:
    def __init__(self, host, port, db_path=None, prefix=protocol.DEFAULT_PREFIX, manifests=None,
                 workloads=None, ctrl_id="ctrl", keepalive=10, settings=None, tick_s=TICK_S,
                 fleet_class=FleetController, link=None, retention=None, shared=None, observer=None):
        # link: a BrokerLink (controller/mqttlink.py) for TLS and the controller's login;
        # without one, plaintext MQTT to host:port (an open test broker).
        self.link = link or BrokerLink(BrokerAddress("mqtt", host, port), CONTROLLER)
        self.host, self.port = self.link.host, self.link.port
        self.refused = None   # the broker's last refusal of the controller's login, if any
        self.db_path = db_path
        self.prefix = prefix
        self.manifests = manifests or {}
        self.workloads = workloads
        self.ctrl_id = ctrl_id
        self.keepalive = keepalive
        self.settings = settings  # migration settings (controller/fleet/migration.py DEFAULTS)
        self.tick_s = tick_s
        # A FleetController subclass (tools/bench/failover.py runs a baseline detector with it).
        self.fleet_class = fleet_class
        # shared: the name of a group of controller replicas (docs/scale.md). Each takes a share
        # of the fleet's messages through the broker's MQTT 5 shared subscription; the one that
        # holds the registry's leadership lease decides (controller/fleet/leadership.py).
        self.shared = shared
        self.leadership = Leadership(ctrl_id) if shared else None
        self._loop_beat = time.monotonic()
        self.lease_keeper = LeaseKeeper(lambda: open_registry(db_path), self.leadership,
                                        lambda: self._loop_beat) if shared else None
        self.follower = None
        self.takeovers = 0
        self.resignations = 0
        self.disconnected_since = time.monotonic()   # not connected yet
        # When the oldest of the leases sent since the last one came back was sent (None: all
        # came back). Written by the decision loop as it publishes, cleared by paho's thread.
        self.unechoed_since = None
        self._lease_topic = protocol.lease_topic(prefix)
        # Set when this replica stepped down because its leases stopped coming back: it claims
        # again only once its broker path shows it works (a new connection, any lease heard).
        self.path_in_doubt = False
        self.inbox = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = None
        self._snapshot = None
        self._snapshot_lock = threading.Lock()
        self.connected = threading.Event()
        self.connected_since = 0.0
        self.client = self.link.client(ctrl_id, mqtt5=bool(shared))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.max_queued_messages_set(0)
        # Back within a few seconds of the broker's return (paho's default waits up to 120 s).
        self.client.reconnect_delay_set(min_delay=1, max_delay=RECONNECT_MAX_S)
        # observer: told in this service's thread what happened (controller/dashboard/feed.py):
        # attach(fleet), message(topic, payload, seconds), audited(events), tick(snapshot, seconds).
        # A replica tells it only while it leads.
        self.observer = observer
        # A RetentionPolicy (controller/fleet/retention.py): pruned by a thread of its own on a
        # connection of its own; None keeps everything (a registry in memory cannot be shared).
        self.retention = None
        if retention is not None and db_path not in (None, ":memory:"):
            self.retention = RetentionWorker(db_path, retention, active=lambda: self.fleet is not None)
        self.fleet = None
        self._startup_error = None
        self.failure = None   # what killed the decision loop, if it died

    # paho's thread --------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.refused = str(reason_code)
            log.error("broker refused the controller: %s", reason_code)
            return
        self.refused = None
        nodes = protocol.node_topic(self.prefix, "+", "+")
        if self.shared:
            client.subscribe("$share/%s/%s" % (self.shared, nodes), qos=1)
            # The other replicas' wills: the leader answers one by saying it is online.
            client.subscribe(protocol.ctrl_topic(self.prefix), qos=1)
        else:
            client.subscribe(nodes, qos=1)
        # Its own lease, back through the broker: how the controller knows it can hear the fleet
        # (controller/fleet/liveness.py).
        client.subscribe(protocol.lease_topic(self.prefix), qos=0)
        # Operators' requests (`edgefleet status`, `move`, ... from any machine with the
        # operator login), answered from this service's thread (controller/fleet/operator.py).
        client.subscribe(opwire.request_topic(self.prefix), qos=1)
        # Before `connected` is set: the next tick must not judge nodes by silence from before.
        self.connected_since = time.time()
        self.path_in_doubt = False
        self.connected.set()
        self.inbox.put(("connected", None, None))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if self.connected.is_set():
            self.disconnected_since = time.monotonic()
        self.connected.clear()

    def _on_message(self, client, userdata, message):
        if message.topic == self._lease_topic and self.shared:
            self.path_in_doubt = False
            if self._own_lease(message.payload):
                self.unechoed_since = None
        self.inbox.put(("message", message.topic, message.payload))

    def _own_lease(self, payload):
        try:
            return protocol.decode("lease", payload)["ctrl"] == self.ctrl_id
        except ProtocolError:
            return False

    # the controller's thread ----------------------------------------------------------------

    def _publish(self, effects):
        for effect in effects:
            if effect.topic == self._lease_topic and self.unechoed_since is None:
                self.unechoed_since = time.monotonic()
            self.client.publish(effect.topic, effect.payload, qos=effect.qos, retain=effect.retain)

    def _run(self):
        registry = None
        try:
            # A replica frozen inside a transaction (a paused VM, SIGSTOP) holds the node rows
            # it locked, and the next leader's writes to them wait: PostgreSQL ends such a
            # session once it has been idle as long as a stalled loop keeps its lease (the
            # keeper renews it only while the loop comes round), so the wait is bounded.
            registry = self.registry = open_registry(
                self.db_path, idle_in_transaction_s=LOOP_STALL_S if self.shared else None)
            if self.shared:
                self.follower = Follower(registry, self.prefix)
            else:
                self._lead(registry)
            will = self._ctrl_status("offline")
            self.client.will_set(will.topic, will.payload, qos=1, retain=True)
            try:
                # A first connect in this thread, so that a broker failing TLS verification is
                # reported to start()'s caller; one that is not up yet is retried by paho.
                self.client.connect(self.host, self.port, keepalive=self.keepalive)
            except ssl.SSLError:
                raise
            except OSError:
                self.client.connect_async(self.host, self.port, keepalive=self.keepalive)
            self.client.loop_start()
        except Exception as e:  # reported to start()'s caller
            if registry is not None:
                registry.close()
            self._startup_error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop()
        except Exception as e:
            # Past handle()'s own guard: a bug in tick() or in publishing. Carrying on connected
            # but deciding nothing would starve the fleet of leases while systemd sees a live
            # process; instead the controller says it is offline and its process exits non-zero.
            log.exception("the controller's loop died")
            self.failure = e
        self._publish([self._ctrl_status("offline")])
        time.sleep(0.2)
        self.client.disconnect()
        self.client.loop_stop()
        registry.close()

    def _ctrl_status(self, state):
        payload = protocol.encode("ctrl_status", {"v": protocol.VERSION, "state": state, "ctrl": self.ctrl_id})
        return Publish(protocol.ctrl_topic(self.prefix), payload, 1, True)

    def _lead(self, registry):
        """The fleet core, loaded from the registry: at start, or when this replica takes over."""
        if self.leadership is not None:
            registry = FencedRegistry(registry, self.leadership)
        self.fleet = self.fleet_class(registry, self.prefix, self.manifests, self.ctrl_id, settings=self.settings,
                                      link_watch=True, **({"shared_ingest": True} if self.shared else {}))
        if self.workloads is not None:
            self.fleet.declare(self.workloads)
        if self.observer is not None:
            self.observer.attach(self.fleet)
            self.fleet.on_audit = self.observer.audited

    def _resign(self, why):
        """Let the lease go: the lease keeper stops renewing it, and it runs out within its TTL
        for another replica to claim. This replica claims again only once connected."""
        self.leadership.token = None
        self.resignations += 1
        self._step_down("%s %s: it lets the lease go" % (self.ctrl_id, why))

    def _step_down(self, why):
        log.warning("%s; following", why)
        self.fleet = None
        self.unechoed_since = None

    def _shared_message(self, topic, payload):
        if topic == protocol.ctrl_topic(self.prefix):
            if self.fleet is not None:
                try:
                    msg = protocol.decode("ctrl_status", payload)
                except ProtocolError:
                    return
                if msg["state"] == "offline" and msg["ctrl"] != self.ctrl_id:
                    # Another replica's will: nodes take it as "no controller" and release their
                    # fence; the leader says there is one, and they deliver again from their
                    # oldest unacknowledged result (what the dead replica held is not lost).
                    self._publish([self._ctrl_status("online")])
            return
        kind = opwire.parse_topic(self.prefix, topic)[1]
        if kind == "lease":
            # Every replica's follower watches the leader's leases come through (the wills it
            # takes depend on it); the leader's fleet core watches its own as well.
            self.follower.handle(topic, payload)
            if self.fleet is None:
                return
        elif self.fleet is None or kind != "op_req":
            self._publish(self.follower.handle(topic, payload))
            return
        try:
            self._publish(self.fleet.handle(topic, payload))
            self._publish(self.fleet.audit())
        except LeadershipLost as e:
            self._step_down(str(e))

    def _more_messages(self, most=BATCH):
        """Messages waiting in the inbox right now, up to `most`: taken with the one in hand."""
        more = []
        while len(more) < most:
            try:
                what, topic, payload = self.inbox.get_nowait()
            except queue.Empty:
                break
            if what != "message":
                self.inbox.put((what, topic, payload))   # a (re)connect: after this batch
                break
            more.append((topic, payload))
        return more

    def _shared_messages(self, messages):
        """Node messages recorded in one transaction (Follower.handle_batch); the controller's
        own topics (operators' requests, its lease, the other replicas' status) one by one."""
        ingest = []
        for topic, payload in messages:
            try:
                _, kind = opwire.parse_topic(self.prefix, topic)
            except Exception:
                kind = None
            if kind in ("op_req", "lease", "ctrl_status"):
                self._shared_message(topic, payload)
            else:
                ingest.append((topic, payload))
        if ingest:
            self._publish(self.follower.handle_batch(ingest))
            for topic, payload in self.follower.deferred:
                self.inbox.put(("message", topic, payload))
            self.follower.deferred = []

    def _shared_tick(self):
        self._publish(self.follower.tick())
        if self.fleet is None:
            try:
                claimed = not self.path_in_doubt and self.leadership.claim(self.registry)
            except Exception as e:
                # The registry refused (its session ended while this replica stood still, a
                # reset link): the registry reconnects on rollback, and the next tick tries again.
                log.warning("%s could not look for a free lease: %s: %s", self.ctrl_id, type(e).__name__, e)
                self.registry.rollback()
                return
            if claimed:
                self.takeovers += 1
                self._lead(self.registry)
                self._publish([self._ctrl_status("online")])
            return
        try:
            self.leadership.renew(self.registry)
            self._publish(self.fleet.tick(self.connected_since))
            self._publish(self.fleet.audit())
        except LeadershipLost as e:
            self._step_down(str(e))
            return
        except Exception as e:
            # The registry refused the tick (a deadlock with another replica, a connection
            # reset): what the leader holds in memory may now differ from the registry. It lets
            # the lease go; whoever claims it next - this replica, maybe - starts over from the
            # registry, as after a failover.
            log.exception("the leader's tick failed")
            self.registry.rollback()
            self.leadership.token = None
            self._step_down("%s gave up leading after a failed tick: %s: %s" % (self.ctrl_id, type(e).__name__, e))
            return
        with self._snapshot_lock:
            self._snapshot = self.fleet.snapshot()

    @property
    def leading(self):
        return self.fleet is not None

    def _loop(self):
        if self.shared:
            return self._shared_loop()
        next_tick = time.monotonic()
        while not self._stop.is_set():
            timeout = max(0.0, next_tick - time.monotonic())
            try:
                what, topic, payload = self.inbox.get(timeout=timeout)
            except queue.Empty:
                what = None
            if what == "connected":
                self._publish([self._ctrl_status("online")])
            elif what == "message":
                started = time.perf_counter()
                self._publish(self.fleet.handle(topic, payload))
                self._publish(self.fleet.audit())
                if self.observer is not None:
                    self._observe("message", topic, payload, time.perf_counter() - started)
            elif what in ("note", "op"):
                self._in_process(what, topic)
            if time.monotonic() >= next_tick:
                # No tick while the broker is away (nothing could be sent, and silence is not
                # the nodes'); the next try waits a tick period rather than spinning.
                if self.connected.is_set():
                    started = time.perf_counter()
                    self._publish(self.fleet.tick(self.connected_since))
                    self._publish(self.fleet.audit())
                    snapshot = self.fleet.snapshot()
                    with self._snapshot_lock:
                        self._snapshot = snapshot
                    if self.observer is not None:
                        self._observe("tick", snapshot, time.perf_counter() - started)
                next_tick = time.monotonic() + self.tick_s

    def _shared_loop(self):
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self._loop_beat = time.monotonic()
            timeout = max(0.0, next_tick - time.monotonic())
            try:
                what, topic, payload = self.inbox.get(timeout=timeout)
            except queue.Empty:
                what = None
            if what == "connected" and self.fleet is not None:
                self._publish([self._ctrl_status("online")])
            elif what == "message":
                self._shared_messages([(topic, payload)] + self._more_messages())
            elif what in ("note", "op"):
                self._in_process(what, topic)
            if time.monotonic() >= next_tick:
                now = time.monotonic()
                if self.fleet is not None and self.connected.is_set() and self.unechoed_since is not None \
                        and now - self.unechoed_since >= STEP_DOWN_S:
                    self.unechoed_since = None
                    self.path_in_doubt = True
                    self._resign("has heard none of its leases back through the broker for %.0f s" % STEP_DOWN_S)
                elif self.connected.is_set():   # a replica cut off from the broker claims nothing
                    self._shared_tick()
                elif self.fleet is not None and now - self.disconnected_since >= STEP_DOWN_S:
                    self._resign("has had no broker connection for %.0f s" % (now - self.disconnected_since))
                # A follower looks for a free lease twice a tick: a takeover within the lease's
                # lifetime plus half a tick.
                next_tick = time.monotonic() + (self.tick_s if self.fleet is not None else self.tick_s / 2)

    def _observe(self, hook, *args):
        """The observer is told, but its bugs never stop the controller."""
        try:
            getattr(self.observer, hook)(*args)
        except Exception:
            log.exception("the controller's observer failed in %s", hook)

    # operator requests from this process (the dashboard) -----------------------------------

    def request(self, op, args, who, timeout=10.0):
        """Ask this controller `op` with `args` as the CLI does over the broker: the same op_req
        message, decoded and answered by the same code (FleetController.handle, operator.py),
        only handed over in-process; `who` goes to the audit log with the outcome. Returns the
        answer's data; RequestRefused with the controller's words when it refuses."""
        if not self.alive():
            raise NoAnswer("the controller is not running", self.host, self.port)
        future = Future()
        request_id = binascii.hexlify(os.urandom(8)).decode()
        try:
            payload = protocol.encode("op_req", {"v": protocol.VERSION, "id": request_id, "op": op, "args": args})
        except (ProtocolError, TypeError, ValueError) as e:   # what the CLI could not send either
            raise RequestRefused("bad %s request: %s" % (op, e)) from None
        self.inbox.put(("op", (request_id, payload, op, args, who, future), None))
        try:
            return future.result(timeout)
        except TimeoutError:
            raise NoAnswer("the controller did not answer %s within %.0f s" % (op, timeout), self.host, self.port) from None

    def note(self, who, op, args, outcome):
        """Write an operator's action that ran outside the controller (a deploy the dashboard
        drove) to the audit log, from the controller's thread."""
        if not self.alive():
            raise ControllerFailed("the controller is not running")
        self.inbox.put(("note", (who, op, args, outcome), None))

    def _operator_request(self, request_id, payload, op, args, who, future):
        reply_topic = opwire.reply_topic(self.prefix, request_id)
        effects = self.fleet.handle(opwire.request_topic(self.prefix), payload)
        replies = [e for e in effects if e.topic == reply_topic]
        self._publish([e for e in effects if e.topic != reply_topic])
        parts = [protocol.decode("op_reply", e.payload) for e in replies]
        if not parts:   # handle() rejected the request itself (a malformed one)
            error = RequestRefused("bad %s request" % op)
        elif not parts[0]["ok"]:
            error = RequestRefused(parts[0].get("error") or "the controller refused %s" % op)
        else:
            error = None
        if op not in READ_OPS:
            self.fleet.note_operator(who, op, args, "refused: %s" % error if error else "done")
        self._publish(self.fleet.audit())
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(json.loads("".join(p.get("data") or "" for p in sorted(parts, key=lambda p: p["part"]))))

    def _in_process(self, what, item):
        """An operator's request or audit note handed over by this process (the dashboard)."""
        if self.fleet is None:   # a replica that does not lead: the leader's dashboard acts
            if what == "op" and not item[-1].done():
                item[-1].set_exception(RequestRefused("%s does not lead the fleet now; use the leader's "
                                                      "dashboard" % self.ctrl_id))
            return
        if what == "note":
            try:
                self.fleet.note_operator(*item)
            except Exception:   # the audit line is lost, not the controller
                log.exception("recording an operator's action failed")
                self.fleet.state.revert()
            self._publish(self.fleet.audit())
            return
        try:
            self._operator_request(*item)
        except LeadershipLost as e:
            if not item[-1].done():
                item[-1].set_exception(RequestRefused("%s lost the fleet's leadership: %s" % (self.ctrl_id, e)))
            self._step_down(str(e))
        except Exception as e:   # a bug answering it costs this request, not the fleet
            log.exception("operator request from this process failed")
            if not item[-1].done():
                item[-1].set_exception(RequestRefused("%s failed in the controller: %s" % (item[2], e)))

    def start(self, timeout=10.0):
        self._thread = threading.Thread(target=self._run, name="edgefleet-controller", daemon=True)
        self._thread.start()
        self._ready.wait(timeout)
        if self._startup_error is not None:
            if isinstance(self._startup_error, EdgefleetError):   # a registry that is not one, ...
                raise self._startup_error
            if isinstance(self._startup_error, OSError):
                raise connect_error(self.link, self._startup_error)
            raise BrokerError("controller could not start: %s" % self._startup_error, self.host, self.port)
        if not self.connected.wait(timeout):
            self.stop()
            if self.refused:
                raise refusal_error(self.link, self.refused)
            raise BrokerError("controller got no answer from the broker at %s" % self.link.address.url,
                              self.host, self.port)
        if self.retention is not None:
            self.retention.start()
        if self.lease_keeper is not None:
            self.lease_keeper.start()
        return self

    def snapshot(self):
        """The latest fleet snapshot (refreshed every tick), safe to read from any thread."""
        with self._snapshot_lock:
            return self._snapshot

    def alive(self):
        return self._thread is not None and self._thread.is_alive()

    def stop(self):
        """Stop the controller; raises ControllerFailed if its loop had died on its own."""
        if self.retention is not None:
            self.retention.stop()
        if self.lease_keeper is not None:
            self.lease_keeper.stop()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.failure is not None:
            raise ControllerFailed("the controller's loop died: %s: %s" % (type(self.failure).__name__, self.failure))

    def run_forever(self):
        self.start()
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()
