"""The operator's side of operator requests (docs/protocol.md, "Operator requests"): ask the
running controller over the broker and wait for its answer, or follow its audit log.

A ControllerLink is one MQTT connection as the operator principal (or the user named in
mqtts://USER@HOST). ask() subscribes to a reply topic of its own, publishes the `op_req`,
and puts the answer's `op_reply` parts back together; no answer within `wait_s` is NoAnswer,
an error reply is RequestRefused with the controller's words.
"""
import binascii
import json
import os
import queue
import ssl
import time

from edgefleet.firmware import protocol
from edgefleet.firmware.errors import ProtocolError

from . import opwire
from .errors import BrokerError, NoAnswer, RequestRefused
from .mqttlink import connect_error, refusal_error


def _request_id():
    return binascii.hexlify(os.urandom(8)).decode()


class ControllerLink:
    def __init__(self, link, prefix=protocol.DEFAULT_PREFIX, wait_s=10.0):
        self.link = link
        self.prefix = prefix
        self.wait_s = wait_s
        self.inbox = queue.Queue()
        self._acks = queue.Queue()
        self._held = []   # audit messages that came in while ask() waited for its answer
        self.client = None

    def __enter__(self):
        connacks = queue.Queue()
        self.client = self.link.client("ef-op-" + _request_id())
        self.client.on_connect = lambda c, u, f, rc, p: connacks.put(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._acks.put((mid, rcs))
        self.client.on_message = lambda c, u, m: self.inbox.put((m.topic, m.payload))
        try:
            self.client.connect(self.link.host, self.link.port, keepalive=30)
        except (OSError, ssl.SSLError) as e:
            raise connect_error(self.link, e) from None
        self.client.loop_start()
        try:
            reason = connacks.get(timeout=self.wait_s)
        except queue.Empty:
            self.close()
            raise BrokerError("the broker at %s did not answer within %.0f s" % (self.link.address.url, self.wait_s),
                              self.link.host, self.link.port) from None
        if reason.is_failure:
            self.close()
            raise refusal_error(self.link, reason)
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()
            self.client = None

    def _subscribe(self, topic, qos=1):
        result, mid = self.client.subscribe(topic, qos=qos)
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            try:
                got, codes = self._acks.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if got == mid:
                if any(code.is_failure for code in codes):
                    raise BrokerError("the broker at %s does not let %s read %s (an operator login is needed)" % (
                        self.link.address.url, self.link.who(), topic), self.link.host, self.link.port)
                return
        raise BrokerError("the broker at %s did not confirm a subscription within %.0f s" % (
            self.link.address.url, self.wait_s), self.link.host, self.link.port)

    def no_answer(self):
        return NoAnswer("no controller answered on %s within %.0f s (is `edgefleet controller` running?)" % (
            self.link.address.url, self.wait_s), self.link.host, self.link.port)

    def ask(self, op, args=None):
        """The controller's answer (JSON data) to `op` with `args`."""
        request_id = _request_id()
        reply_topic = opwire.reply_topic(self.prefix, request_id)
        self._subscribe(reply_topic)
        request = protocol.encode("op_req", {"v": protocol.VERSION, "id": request_id, "op": op, "args": args or {}})
        self.client.publish(opwire.request_topic(self.prefix), request, qos=protocol.delivery("op_req")[0])
        parts, total = {}, None
        # The wait runs from the request, and again from each part: a large answer takes longer.
        deadline = time.monotonic() + self.wait_s
        while total is None or len(parts) < total:
            try:
                topic, payload = self.inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise self.no_answer() from None
            if topic != reply_topic:
                self._held.append((topic, payload))
                continue
            try:
                reply = protocol.decode("op_reply", payload)
            except ProtocolError:
                continue
            if reply["id"] != request_id or not 0 <= reply["part"] < reply["parts"]:
                continue
            if not reply["ok"]:
                raise RequestRefused(reply.get("error") or "the controller refused %s" % op)
            total = reply["parts"]
            parts[reply["part"]] = reply.get("data") or ""
            deadline = time.monotonic() + self.wait_s
        self.client.unsubscribe(reply_topic)
        try:
            return json.loads("".join(parts[i] for i in range(total)))
        except ValueError as e:
            raise RequestRefused("the controller's answer to %s is not JSON: %s" % (op, e)) from None

    def follow_audit(self):
        """Start receiving the audit log as the controller records it (audit_events())."""
        self._subscribe(opwire.audit_topic(self.prefix))

    def audit_events(self, timeout):
        """Audit events received so far, waiting up to `timeout` for the first."""
        events = []
        wait = timeout
        while True:
            if self._held:
                topic, payload = self._held.pop(0)
            else:
                try:
                    topic, payload = self.inbox.get(timeout=wait)
                except queue.Empty:
                    return events
            wait = 0
            if topic != opwire.audit_topic(self.prefix):
                continue
            try:
                events.append(protocol.decode("audit", payload)["ev"])
            except ProtocolError:
                continue
