"""The MQTT shell of a rollout (controller/deploy/rollout.py): `edgefleet deploy` and `edgefleet
rollback` run it, as do the tests and tools/bench/rollout.py.

paho's network thread only queues what arrives; the caller's thread owns the Rollout, feeds it
messages and the clock, and publishes what it returns."""
import logging
import queue
import threading
import time
import uuid


from edgefleet.firmware import protocol
from edgefleet.firmware.errors import ProtocolError

from ..errors import BrokerError, RolloutError
from ..mqttlink import BrokerLink, connect_error, refusal_error
from ..netutil import BrokerAddress
from ..security.principals import OPERATOR
from .rollout import ota_msg

log = logging.getLogger(__name__)
WATCHED = ("hello", "hb", "result", "ota_state")


class Deployer:
    def __init__(self, host=None, port=None, prefix=protocol.DEFAULT_PREFIX, client_id=None, link=None):
        # link: a BrokerLink (TLS, the operator's login); without one, plaintext MQTT to
        # host:port (an open test broker).
        self.link = link or BrokerLink(BrokerAddress("mqtt", host, port), OPERATOR)
        self.host, self.port, self.prefix = self.link.host, self.link.port, prefix
        self.refused = None
        self.inbox = queue.Queue()
        self.connected = threading.Event()
        client_id = client_id or "deploy-" + uuid.uuid4().hex[:8]
        self.client = self.link.client(client_id)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.inbox.put((m.topic, m.payload))

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.refused = str(reason_code)
            log.error("broker refused the deployer: %s", reason_code)
            return
        for kind in WATCHED:
            client.subscribe(protocol.node_topic(self.prefix, "+", kind), qos=1)
        self.connected.set()

    def __enter__(self):
        try:
            self.client.connect(self.host, self.port, keepalive=10)
        except OSError as e:
            raise connect_error(self.link, e)
        self.client.loop_start()
        if not self.connected.wait(10):
            self.__exit__()
            if self.refused:
                raise refusal_error(self.link, self.refused)
            raise BrokerError("deployer got no answer from the broker at %s" % self.link.address.url,
                              self.host, self.port)
        time.sleep(0.2)   # let the subscriptions settle before the first message goes out
        return self

    def __exit__(self, *exc):
        self.client.loop_stop()
        self.client.disconnect()

    def send(self, out):
        for node, msg in out:
            self.client.publish(protocol.node_topic(self.prefix, node, "ota"), protocol.encode("ota", msg), qos=1)

    def messages(self, timeout):
        """(node, kind, msg) decoded from what arrived, waiting up to `timeout` for the first."""
        out = []
        try:
            item = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return out
        while True:
            topic, payload = item
            try:
                node, kind = protocol.parse_topic(self.prefix, topic)
                out.append((node, kind, protocol.decode(kind, payload)))
            except ProtocolError as e:
                log.warning("ignoring %s: %s", topic, e)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return out

    def run(self, rollout, timeout_s=600.0, on_progress=None, tick_s=0.1):
        """Drive a Rollout until it is done or failed; returns it."""
        deadline = time.monotonic() + timeout_s
        self.send(rollout.start(time.monotonic()))
        while rollout.status in ("running", "rolling_back"):
            if time.monotonic() > deadline:
                rollout.status = "failed"
                rollout.error = (rollout.error + "; " if rollout.error else "") + "gave up after %.0f s" % timeout_s
                break
            for node, kind, msg in self.messages(tick_s):
                self.send(rollout.handle(node, kind, msg, time.monotonic()))
            self.send(rollout.tick(time.monotonic()))
            if on_progress is not None:
                on_progress(rollout.progress())
        if on_progress is not None:
            on_progress(rollout.progress())
        return rollout

    def rollback(self, nodes, timeout_s=120.0):
        """The operator's rollback: each node swaps back to its previous slot; returns when every
        node is back and its workloads run again. {node: version it runs now}."""
        op_id = "rollback-" + uuid.uuid4().hex[:8]
        boots, waiting, versions, refused = {}, set(nodes), {}, {}
        self.send([(node, ota_msg(op_id, "rollback")) for node in nodes])
        asked = set()
        deadline = time.monotonic() + timeout_s
        while waiting and time.monotonic() < deadline:
            for node, kind, msg in self.messages(0.2):
                if node not in waiting:
                    continue
                if kind == "ota_state" and msg["id"] == op_id:
                    if msg["state"] == "rolledback":
                        asked.add(node)
                        boots[node] = msg["boot"]
                        versions[node] = msg.get("ver")
                    elif msg["state"] == "rejected":
                        refused[node] = msg.get("err")
                        waiting.discard(node)
                elif kind == "hb" and node in asked and msg["boot"] > boots[node]:
                    if all(w["state"] == "running" and w["n"] > 0 for w in msg["wl"]):
                        waiting.discard(node)
        if refused:
            raise RolloutError("rollback refused: %s" % "; ".join("%s: %s" % kv for kv in sorted(refused.items())), refused)
        if waiting:
            raise RolloutError("no healthy rollback within %.0f s on %s" % (timeout_s, ", ".join(sorted(waiting))), waiting)
        return versions
