"""`edgefleet logs NODE --follow`: a node's console lines as they come, read as the operator
straight from the broker on PREFIX/node/NODE/log (docs/protocol.md, kind `log`). The controller
keeps no console lines: what was said while nobody followed is gone, as on a serial console."""
import json
import logging
import queue
import signal
import sys
import time
import uuid

from ...firmware import protocol
from ...firmware.errors import ProtocolError
from ..errors import BrokerError, ConfigError
from ..mqttlink import connect_error, refusal_error

log = logging.getLogger(__name__)

CONNECT_WAIT_S = 10


def batch_lines(node, msg, now=None):
    """The printed lines for one decoded `log` message: `HH:MM:SS NODE boot N: line`, after a
    line saying how many the node dropped before these, if it did."""
    head = "%s %s boot %d: " % (time.strftime("%H:%M:%S", time.localtime(now)), node, msg["boot"])
    out = []
    if msg.get("dropped"):
        out.append(head + "[%d console lines dropped]" % msg["dropped"])
    for line in msg["lines"]:
        out.append(head + line)
    return out


class LogFollower:
    """Subscribes to one node's log topic through a BrokerLink and hands each valid `log`
    message, decoded, to `show`."""

    def __init__(self, link, node, show, prefix=protocol.DEFAULT_PREFIX):
        if not protocol.valid_node_id(node):
            raise ConfigError("%r is not a node id (1 to 32 of a-z 0-9 - _)" % node)
        self.link, self.node, self.show = link, node, show
        self.topic = protocol.node_topic(prefix, node, "log")
        self.inbox = queue.Queue()
        self.client = link.client("logs-" + uuid.uuid4().hex[:8])
        # A live tail misses what is said while it is away: come back within seconds.
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.inbox.put(("lost", None))
        self.client.on_message = lambda c, u, m: self.inbox.put(("message", m.payload))

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.inbox.put(("refused", str(reason_code)))
            return
        # QoS 0: the node publishes console lines at most once; a late line is no use.
        client.subscribe(self.topic, qos=0)
        self.inbox.put(("connected", None))

    def run(self, stop):
        """Print lines until stop() is true; raises BrokerError if the broker cannot be reached
        or refuses the login."""
        try:
            self.client.connect(self.link.host, self.link.port, keepalive=30)
        except OSError as e:
            raise connect_error(self.link, e)
        self.client.loop_start()
        try:
            self._wait_connected()
            sys.stderr.write("following %s's console on %s (Ctrl-C to stop)\n" % (self.node, self.link.describe()))
            sys.stderr.flush()
            connected = True
            while not stop():
                try:
                    what, data = self.inbox.get(timeout=0.2)
                except queue.Empty:
                    continue
                if what == "message":
                    self._show(data)
                elif what == "lost" and connected:
                    connected = False
                    sys.stderr.write("edgefleet: lost the broker; reconnecting\n")
                elif what == "connected":
                    connected = True
                elif what == "refused":
                    raise refusal_error(self.link, data)
        finally:
            self.client.loop_stop()
            self.client.disconnect()

    def _wait_connected(self):
        deadline = time.monotonic() + CONNECT_WAIT_S
        while time.monotonic() < deadline:
            try:
                what, data = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if what == "connected":
                return
            if what == "refused":
                raise refusal_error(self.link, data)
        raise BrokerError("no answer from the broker at %s" % self.link.address.url, self.link.host, self.link.port)

    def _show(self, payload):
        try:
            msg = protocol.decode("log", payload)
            if msg["node"] != self.node:
                raise ProtocolError("log: node %r in payload, %r in topic" % (msg["node"], self.node), "log", "node")
        except ProtocolError as e:
            log.warning("ignoring a bad log message from %s: %s", self.node, e)
            return
        self.show(msg)


def follow(link, node, prefix=protocol.DEFAULT_PREFIX, as_json=False):
    """Print `node`'s console lines until Ctrl-C or SIGTERM (as_json: each message as one JSON
    object a line); returns the exit status (0)."""
    def show(msg):
        for line in [json.dumps(msg)] if as_json else batch_lines(node, msg):
            print(line, flush=True)

    stopping = []
    follower = LogFollower(link, node, show, prefix)
    previous = signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
    try:
        follower.run(lambda: bool(stopping))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
