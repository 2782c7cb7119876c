"""Boot one simulated node against a broker and watch what it says: the building block of
heap measurements, benchmarks and single-node tests.

The probe plays the controller's part only as far as needed: it publishes a retained
assignment for the node and records every message the node sends.
"""
import json
import threading
import time

import paho.mqtt.client as mqtt

from edgefleet.firmware import protocol

from .simfleet import SimFleet

# The simulated boards' topic prefix (SimFleet's config).
PREFIX = protocol.DEFAULT_PREFIX


class NodeProbe:
    def __init__(self, broker, root, node_id, board, heap_override=None, keepalive=5, extra_files=None, config=None,
                 code_store=None, key=None):
        """key: a bundle signing key (private half) whose updates the node takes."""
        self.broker = broker
        self.node_id = node_id
        self.fleet = SimFleet(root, broker.host, broker.port, [(node_id, board)], keepalive=keepalive,
                              heap_override=heap_override, extra_files=extra_files, config=config,
                              code_store=code_store, key=key)
        self._commands = 0
        self.messages = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="probe-" + node_id)
        self._client.on_message = self._on_message
        # Subscribed at every connect: the probe keeps watching across a broker restart.
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *args: self._subscribed.set()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe(protocol.node_topic(PREFIX, self.node_id, "+"), qos=1)

    def _on_disconnect(self, *args):
        self._subscribed.clear()

    def announce_controller(self, timeout=30):
        """Once the probe watches again (after a broker restart), say what a controller says
        when it comes up (`ctrl_status` online): the node then delivers its outbox again from
        the oldest unacknowledged result, which the probe sees whenever it got back first."""
        if not self._subscribed.wait(timeout):
            raise TimeoutError("the probe did not subscribe again within %s s" % timeout)
        payload = protocol.encode("ctrl_status", {"v": protocol.VERSION, "state": "online", "ctrl": "probe"})
        self._client.publish(protocol.ctrl_topic(PREFIX), payload, qos=1).wait_for_publish(5)

    def _on_message(self, client, userdata, message):
        try:
            _, kind = protocol.parse_topic(PREFIX, message.topic)
            msg = json.loads(message.payload)
        except (ValueError, protocol.ProtocolError):
            return
        with self._lock:
            self.messages.append((time.monotonic(), kind, msg))

    def assign(self, workloads, epoch=None):
        payload = protocol.encode("assign", {"v": protocol.VERSION, "epoch": epoch or int(time.time() * 1000), "wl": workloads})
        info = self._client.publish(protocol.node_topic(PREFIX, self.node_id, "assign"), payload, qos=1, retain=True)
        info.wait_for_publish(5)

    def start(self, workloads=None):
        self._client.connect(self.broker.host, self.broker.port)
        self._client.loop_start()
        if workloads is not None:
            self.assign(workloads)
        self.fleet.start()
        return self

    def command(self, op, args=None, timeout=10):
        """Send a `cmd` to the node and return its reply (None if none came in time)."""
        self._commands += 1
        cid = "probe-%d" % self._commands
        msg = {"v": protocol.VERSION, "id": cid, "op": op}
        if args is not None:
            msg["args"] = args
        payload = protocol.encode("cmd", msg)
        self._client.publish(protocol.node_topic(PREFIX, self.node_id, "cmd"), payload, qos=1).wait_for_publish(5)
        replies = self.wait_for(lambda p: [r for r in p.of_kind("reply") if r.get("id") == cid], timeout)
        return replies[0] if replies else None

    def of_kind(self, kind):
        with self._lock:
            return [msg for _, k, msg in self.messages if k == kind]

    def timed(self, kind):
        """(arrival time on time.monotonic(), message) of every message of a kind."""
        with self._lock:
            return [(t, msg) for t, k, msg in self.messages if k == kind]

    def wait_for(self, predicate, timeout):
        """Poll predicate(probe) until it returns something true, or return None at timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate(self)
            if value:
                return value
            time.sleep(0.1)
        return None

    def boot_event(self):
        for ev in self.of_kind("event"):
            if ev.get("kind") == "boot":
                return ev
        return None

    def console_boot_heap(self, timeout):
        """{"heap_used", "heap_total"} from the boot line the node prints on its console before
        it opens its link (firmware/bootguard.py), or None: a node whose heap is too full to
        connect (an ESP32 with its code as files) never sends its boot event, but says this."""
        import re
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(rb"heap in use (\d+) of (\d+)", self.board.console.since(0))
            if found:
                return {"heap_used": int(found.group(1)), "heap_total": int(found.group(2))}
            time.sleep(0.1)
        return None

    @property
    def board(self):
        return self.fleet.board(self.node_id)

    def stop(self):
        self.fleet.stop()
        # Clear the retained assignment so a later probe of the same id starts clean.
        self._client.publish(protocol.node_topic(PREFIX, self.node_id, "assign"), b"", qos=1, retain=True).wait_for_publish(5)
        self._client.loop_stop()
        self._client.disconnect()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
