# An asyncio MQTT 3.1.1 client (QoS 0 and 1) in the MicroPython/CPython common subset.
#
# One MQTTClient keeps its configuration across connections; each connect() opens a fresh _Link,
# so tasks still waiting on a dead link can never disturb the next one. Reconnecting is the
# caller's job. Incoming payloads are read straight into one bytes object each; outgoing payloads
# are written as given, without being copied, unless small enough that one TCP segment is cheaper.
import asyncio
import struct

from .clock import ticks_diff, ticks_ms
from .errors import (ConnectRefused, LinkError, MQTTError, ProtocolViolation, SubscribeRefused,
                     Timeout)
from .mqtt_codec import (CONNACK, PINGRESP, PUBACK, PUBLISH, SUBACK, UNSUBACK, connect_packet, parse_connack,
                         puback_packet, publish_header, read_fixed_header, skip_bytes,
                         subscribe_packet, unsubscribe_packet)

_PINGREQ_PACKET = b"\xc0\x00"
_DISCONNECT_PACKET = b"\xe0\x00"
# Below this a payload is appended to its header: one segment avoids a Nagle/delayed-ACK stall,
# and the copy is small enough for an MCU heap.
_COALESCE_BYTES = 1024
# Control packets this client accepts have bodies of at most 3 bytes (SUBACK for one topic).
_MAX_CONTROL_BODY = 16


def as_mqtt_error(e):
    """The MQTTError that reports exception `e` from the link's I/O."""
    if isinstance(e, MQTTError):
        return e
    if isinstance(e, asyncio.TimeoutError):
        return Timeout("timed out")
    if isinstance(e, EOFError):
        return LinkError("the broker closed the connection")
    if isinstance(e, OSError):
        return LinkError("socket error: %s" % (e,))
    # A bug must still close the link loudly rather than leave a dead reader behind.
    return MQTTError("unexpected %s: %s" % (type(e).__name__, e))


class _Link:
    """One TCP connection to the broker and the requests waiting on it."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.open = True
        self.ready = False  # CONNACK accepted
        self.closing = False  # the caller asked for the link to close
        self.acks = {}  # packet id -> None until acknowledged, then the broker's return code
        self.inflight = 0  # QoS1 publishes sent or about to be sent, not yet acknowledged
        # One event for every change waiters care about (an ack, a free slot, the link dropping):
        # waiters re-check their own condition, which costs less RAM than an event per request.
        self.changed = asyncio.Event()
        self.closed = asyncio.Event()
        self.send_lock = asyncio.Lock()
        self.tasks = []
        now = ticks_ms()
        self.last_rx = now
        self.last_tx = now
        self.last_ping = now


class MQTTClient:
    """MQTT 3.1.1 client, QoS 0 and 1; reusable for a new connect() once its link has closed.

    on_message(topic: str, payload: bytes, retain: bool, qos: int) runs in the reader task and
    must not block; a QoS1 message is acknowledged after it returns (or raises)."""

    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=30,
                 clean_session=True, max_inflight=8, max_packet=16384, on_message=None,
                 tls=None, server_hostname=None, payload_limit=None, on_tick=None):
        if password is not None and user is None:
            raise ValueError("MQTT 3.1.1 allows a password only together with a user name")
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.max_inflight = max(1, max_inflight)
        self.max_packet = max_packet
        self.on_message = on_message
        # payload_limit(kind) -> max payload bytes, None for no such kind (protocol.limit), kind =
        # a topic's last level: a larger PUBLISH, or one of no listed kind, is skipped in small
        # reads, never allocated.
        self.payload_limit = payload_limit
        # An SSLContext (firmware/tlslink.py) for a TLS link, verified as `server_hostname`.
        self.tls = tls
        self.server_hostname = server_hostname or host
        # on_tick(): called from the keepalive loop about once a second while a link is up (never
        # with keepalive 0), so that whoever waits on the link can show life without a timed
        # wait of its own (firmware/node.py keep_link beats its supervisor from here).
        self.on_tick = on_tick
        self.last_error = None
        self.callback_error = None  # the last exception on_message raised; the message was acked
        self.dropped = 0  # incoming PUBLISH packets skipped for being over max_packet or payload_limit
        self._will = None
        self._link = None
        self._packet_id = 0

    @property
    def is_connected(self):
        link = self._link
        return link is not None and link.open and link.ready

    def set_will(self, topic, payload, qos=1, retain=True):
        """Last Will for the next connect(); the broker publishes it if the link dies uncleanly."""
        if qos not in (0, 1):
            raise ValueError("will QoS must be 0 or 1")
        self._will = (topic, payload, qos, retain)

    # -- connection ------------------------------------------------------------------------

    async def connect(self, timeout=10):
        """Open the link; returns the broker's session-present flag. Raises MQTTError on failure."""
        if self.is_connected:
            raise MQTTError("already connected")
        self._link = None
        try:
            return await asyncio.wait_for(self._handshake(), timeout)
        except asyncio.CancelledError:
            self._abandon(LinkError("connect cancelled"))  # so the half-open socket is closed
            raise
        except Exception as e:  # noqa: BLE001 - every failure is reported as an MQTTError
            if isinstance(e, asyncio.TimeoutError):
                error = Timeout("no CONNACK from %s:%s within %s s" % (self.host, self.port, timeout))
            else:
                error = as_mqtt_error(e)
        self._abandon(error)
        await self.wait_closed()
        raise error

    def _abandon(self, error):
        if self._link is None:
            self.last_error = error
        else:
            self._drop(self._link, error)

    async def _handshake(self):
        if self.tls is None:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        else:
            from .tlslink import open_tls
            reader, writer = await open_tls(self.host, self.port, self.tls, self.server_hostname)
        link = _Link(reader, writer)
        self._link = link
        self.last_error = None
        await self._send(link, connect_packet(self.client_id, self.keepalive, self.clean_session,
                                              self.user, self.password, self._will))
        first, length = await read_fixed_header(reader)
        if first != CONNACK << 4 or length != 2:
            raise ProtocolViolation("expected CONNACK, got packet type %d" % (first >> 4))
        session_present, code = parse_connack(await reader.readexactly(2))
        if code:
            raise ConnectRefused(code)
        link.ready = True
        link.last_rx = ticks_ms()
        link.tasks.append(asyncio.create_task(self._read_loop(link)))
        if self.keepalive:
            link.tasks.append(asyncio.create_task(self._keepalive_loop(link)))
        return session_present

    async def disconnect(self):
        """Send DISCONNECT (so the broker discards the will) and close the link."""
        link = self._link
        if link is None or not link.open:
            return
        # The broker hangs up once it reads DISCONNECT; that EOF is not an error.
        link.closing = True
        link.ready = False
        try:
            await asyncio.wait_for(self._send(link, _DISCONNECT_PACKET), 2)
        except (MQTTError, asyncio.TimeoutError):
            pass  # the link is going away either way; the broker may then publish the will
        self._drop(link, None, graceful=True)
        await link.closed.wait()

    async def abort(self):
        """Drop the socket without DISCONNECT, as a power cut would: the broker sends the will."""
        link = self._link
        if link is not None:
            link.closing = True
            self._drop(link, None)
            await link.closed.wait()

    async def wait_closed(self):
        """Return once the current link is gone (error, disconnect or abort)."""
        link = self._link
        if link is not None:
            await link.closed.wait()

    def _drop(self, link, error, graceful=False):
        if not link.open:
            return
        link.open = False
        link.ready = False
        if link is self._link:
            self.last_error = None if link.closing else error
        link.changed.set()
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current:
                task.cancel()
        link.tasks.append(asyncio.create_task(self._release(link, graceful)))

    async def _release(self, link, graceful):
        writer = link.writer
        try:
            transport = getattr(writer, "transport", None)
            if transport is not None and not graceful:
                transport.abort()  # CPython would otherwise keep flushing to a dead peer
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 2)
        except Exception:  # noqa: BLE001 - the socket is already broken; closing is best effort
            pass
        link.reader = None
        link.writer = None
        link.closed.set()

    def _ready_link(self):
        link = self._link
        if link is None or not link.open or not link.ready:
            raise self._closed_error(link)
        return link

    def _closed_error(self, link):
        if link is not self._link:
            return LinkError("link closed and replaced by a new connection")
        if self.last_error is None:
            return LinkError("not connected")
        return LinkError("link closed: %s" % (self.last_error,))

    # -- sending ---------------------------------------------------------------------------

    async def _send(self, link, packet, payload=None):
        async with link.send_lock:
            if not link.open:
                raise self._closed_error(link)
            try:
                link.writer.write(packet)
                if payload is not None:
                    link.writer.write(payload)
                await link.writer.drain()
            except OSError as e:
                error = LinkError("send failed: %s" % (e,))
                self._drop(link, error)
                raise error
            link.last_tx = ticks_ms()

    async def publish(self, topic, payload, qos=0, retain=False, timeout=10):
        """Publish; with qos=1 return once the broker's PUBACK arrives."""
        if qos not in (0, 1):
            raise ValueError("QoS %r not supported (0 or 1)" % (qos,))
        link = self._ready_link()
        if isinstance(payload, str):
            payload = payload.encode()
        try:
            if qos:
                await asyncio.wait_for(self._publish_acked(link, topic, payload, retain), timeout)
            else:
                await asyncio.wait_for(self._send_publish(link, topic, payload, 0, retain, 0), timeout)
        except asyncio.TimeoutError:
            raise Timeout("publish to %s not completed within %s s" % (topic, timeout)) from None

    async def _send_publish(self, link, topic, payload, qos, retain, packet_id):
        header = publish_header(topic, len(payload), qos, retain, packet_id)
        if len(payload) <= _COALESCE_BYTES:
            await self._send(link, header + payload)
        else:
            await self._send(link, header, payload)

    async def _publish_acked(self, link, topic, payload, retain):
        while link.open and link.inflight >= self.max_inflight:
            link.changed.clear()
            await link.changed.wait()
        if not link.open:
            raise self._closed_error(link)
        packet_id = self._claim_packet_id(link)
        link.inflight += 1
        try:
            await self._send_publish(link, topic, payload, 1, retain, packet_id)
            await self._wait_ack(link, packet_id)
        finally:
            link.inflight -= 1
            link.acks.pop(packet_id, None)
            link.changed.set()  # a slot is free

    def _claim_packet_id(self, link):
        packet_id = self._packet_id
        while True:
            packet_id = packet_id % 0xFFFF + 1
            if packet_id not in link.acks:
                break
        self._packet_id = packet_id
        link.acks[packet_id] = None
        return packet_id

    async def _wait_ack(self, link, packet_id):
        while link.acks.get(packet_id) is None:
            if not link.open:
                raise self._closed_error(link)
            link.changed.clear()
            await link.changed.wait()
        return link.acks[packet_id]

    async def subscribe(self, topic, qos=1, timeout=10):
        """Subscribe to one topic filter; returns the granted QoS. Raises SubscribeRefused on 0x80."""
        if qos not in (0, 1):
            raise ValueError("QoS %r not supported (0 or 1)" % (qos,))
        link = self._ready_link()
        try:
            granted = await asyncio.wait_for(self._subscribe(link, topic, qos), timeout)
        except asyncio.TimeoutError:
            raise Timeout("no SUBACK for %s within %s s" % (topic, timeout)) from None
        if granted == 0x80:
            raise SubscribeRefused("broker refused the subscription to %s" % (topic,))
        return granted

    async def _subscribe(self, link, topic, qos):
        packet_id = self._claim_packet_id(link)
        try:
            await self._send(link, subscribe_packet(packet_id, topic, qos))
            return await self._wait_ack(link, packet_id)
        finally:
            link.acks.pop(packet_id, None)

    async def unsubscribe(self, topic, timeout=10):
        """Unsubscribe from one topic filter (a topic workload that left this node)."""
        link = self._ready_link()
        try:
            await asyncio.wait_for(self._unsubscribe(link, topic), timeout)
        except asyncio.TimeoutError:
            raise Timeout("no UNSUBACK for %s within %s s" % (topic, timeout)) from None

    async def _unsubscribe(self, link, topic):
        packet_id = self._claim_packet_id(link)
        try:
            await self._send(link, unsubscribe_packet(packet_id, topic))
            return await self._wait_ack(link, packet_id)
        finally:
            link.acks.pop(packet_id, None)

    # -- receiving -------------------------------------------------------------------------

    async def _keepalive_loop(self, link):
        period = self.keepalive * 1000
        half = period // 2
        try:
            while link.open:
                await asyncio.sleep(min(period // 4, 1000) / 1000)
                if self.on_tick is not None and link.open:
                    self.on_tick()
                now = ticks_ms()
                silent = ticks_diff(now, link.last_rx)
                if silent > period * 3 // 2:
                    self._drop(link, Timeout("nothing from the broker for %d ms" % silent))
                    return
                # Pinging when either direction is idle means a client that only publishes QoS0
                # still hears from the broker, so silence reliably means a dead link.
                idle = max(ticks_diff(now, link.last_tx), silent)
                if idle >= half and ticks_diff(now, link.last_ping) >= half:
                    link.last_ping = now
                    await asyncio.wait_for(self._send(link, _PINGREQ_PACKET), half / 1000)
        except asyncio.TimeoutError:
            self._drop(link, Timeout("PINGREQ stuck behind a send for %d ms" % half))
        except Exception as e:  # noqa: BLE001 - every failure is reported through the link
            self._drop(link, as_mqtt_error(e))

    async def _read_loop(self, link):
        try:
            while link.open:
                await self._receive_packet(link)
        except Exception as e:  # noqa: BLE001 - every failure is reported through the link
            self._drop(link, as_mqtt_error(e))

    async def _receive_packet(self, link):
        first, length = await read_fixed_header(link.reader)
        link.last_rx = ticks_ms()
        packet_type = first >> 4
        if packet_type == PUBLISH:
            await self._receive_publish(link, first & 0x0F, length)
        elif first & 0x0F or length > _MAX_CONTROL_BODY:
            raise ProtocolViolation("malformed packet of type %d (flags %d, %d bytes)"
                                    % (packet_type, first & 0x0F, length))
        else:
            body = await link.reader.readexactly(length) if length else b""
            self._receive_control(link, packet_type, body)
        link.last_rx = ticks_ms()

    def _receive_control(self, link, packet_type, body):
        if packet_type == PUBACK and len(body) == 2:
            self._acknowledge(link, struct.unpack("!H", body)[0], 0)
        elif packet_type == SUBACK and len(body) == 3:
            self._acknowledge(link, struct.unpack("!H", body[:2])[0], body[2])
        elif packet_type == UNSUBACK and len(body) == 2:
            self._acknowledge(link, struct.unpack("!H", body)[0], 0)
        elif packet_type == PINGRESP and not body:
            pass  # its arrival already refreshed last_rx
        else:
            raise ProtocolViolation("unexpected packet of type %d with %d bytes" % (packet_type, len(body)))

    def _acknowledge(self, link, packet_id, code):
        # An ack for a request that already timed out is harmless and ignored.
        if packet_id in link.acks:
            link.acks[packet_id] = code
            link.changed.set()

    async def _receive_publish(self, link, flags, length):
        qos = (flags >> 1) & 3
        if qos > 1:
            raise ProtocolViolation("PUBLISH with QoS %d; this client subscribes with QoS <= 1" % qos)
        header_len = 4 if qos else 2
        if length < header_len:
            raise ProtocolViolation("PUBLISH of %d bytes is too short" % length)
        reader = link.reader
        topic_len = struct.unpack("!H", await reader.readexactly(2))[0]
        payload_len = length - header_len - topic_len
        if payload_len < 0:
            raise ProtocolViolation("PUBLISH topic of %d bytes overruns the packet" % topic_len)
        oversized = length > self.max_packet
        if oversized:
            await skip_bytes(reader, topic_len)
        else:
            topic = await reader.readexactly(topic_len)
            if self.payload_limit is not None:
                limit = self.payload_limit(topic[topic.rfind(b"/") + 1:].decode())
                oversized = limit is None or payload_len > limit
        packet_id = struct.unpack("!H", await reader.readexactly(2))[0] if qos else 0
        if qos and not packet_id:
            raise ProtocolViolation("QoS1 PUBLISH with packet id 0")
        if oversized:
            # Acknowledged all the same, or a persistent session would redeliver it forever.
            await skip_bytes(reader, payload_len)
            self.dropped += 1
        else:
            self._deliver(topic, await reader.readexactly(payload_len), bool(flags & 1), qos)
        if qos:
            await self._send(link, puback_packet(packet_id))

    def _deliver(self, topic, payload, retain, qos):
        try:
            topic = topic.decode()
        except UnicodeError:
            raise ProtocolViolation("PUBLISH topic is not UTF-8") from None
        if self.on_message is None:
            return
        try:
            self.on_message(topic, payload, retain, qos)
        except Exception as e:  # noqa: BLE001 - a handler bug must not kill the link or loop redelivery
            self.callback_error = e
