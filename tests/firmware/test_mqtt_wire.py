# The firmware's MQTT client on the wire: its packet codecs, and scripted fake brokers doing what
# a real broker never does (refusing, going silent, sending garbage or oversized packets).
# Every test bounds its own time.
import asyncio
import random
import struct

from firmware import mqtt, mqtt_codec
from firmware.errors import (ConnectRefused, LinkError, MQTTError, ProtocolViolation, SubscribeRefused,
                             Timeout)
from unit import bounded, raises

CONNACK_OK = b"\x20\x02\x00\x00"


async def _expect_error(coro, error_type):
    try:
        await coro
    except error_type as e:
        return e
    raise AssertionError("expected %s" % error_type.__name__)


async def _until(condition, timeout=3):
    for _ in range(int(timeout * 50)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met within %s s" % timeout)


class BytesReader:
    """A stream reader over fixed bytes, enough for read_fixed_header."""

    def __init__(self, data):
        self.data = data

    async def readexactly(self, n):
        if len(self.data) < n:
            raise EOFError
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk


async def _read_packet(reader):
    first, length = await mqtt_codec.read_fixed_header(reader)
    body = await reader.readexactly(length) if length else b""
    return first, body


async def _accept_connect(reader, writer):
    first, _ = await _read_packet(reader)
    assert first == 0x10, "expected CONNECT, got %#x" % first
    writer.write(CONNACK_OK)
    await writer.drain()


async def _until_client_leaves(reader):
    # Holding the socket open until the client closes it means only the client can end a scenario.
    while await reader.read(64):
        pass


async def _start_fake_broker(handler):
    # The MicroPython server object does not expose its socket, so pick a port ourselves.
    for _ in range(30):
        port = 20000 + random.getrandbits(15)
        try:
            return await asyncio.start_server(handler, "127.0.0.1", port), port
        except OSError:
            pass
    raise AssertionError("no free port for a fake broker")


# -- codecs ---------------------------------------------------------------------------------

LENGTH_VECTORS = (
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"), (16384, b"\x80\x80\x01"),
    (2097151, b"\xff\xff\x7f"), (2097152, b"\x80\x80\x80\x01"), (268435455, b"\xff\xff\xff\x7f"),
)


def test_remaining_length_encoding_at_every_digit_boundary():
    for n, encoded in LENGTH_VECTORS:
        assert mqtt_codec.encode_length(n) == encoded, n
    raises(ValueError, mqtt_codec.encode_length, 268435456)
    raises(ValueError, mqtt_codec.encode_length, -1)


async def test_fixed_header_decoding_round_trips_and_rejects_five_digits():
    for n, encoded in LENGTH_VECTORS:
        first, length = await mqtt_codec.read_fixed_header(BytesReader(b"\x30" + encoded))
        assert (first, length) == (0x30, n), n
    # A zero continuation digit is still a valid (non-minimal) encoding in 3.1.1.
    assert await mqtt_codec.read_fixed_header(BytesReader(b"\xd0\x80\x00")) == (0xD0, 0)
    await _expect_error(mqtt_codec.read_fixed_header(BytesReader(b"\x30\xff\xff\xff\xff\x01")),
                             ProtocolViolation)
    try:
        await mqtt_codec.read_fixed_header(BytesReader(b"\x30\x80"))
        raise AssertionError("a truncated length must end in EOF")
    except EOFError:
        pass


def test_connect_packet_layout():
    packet = mqtt_codec.connect_packet("n1", 30, True, "u", "pw", ("t/w", b"off", 1, True))
    variable = b"\x00\x04MQTT\x04" + bytes((0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02,)) + b"\x00\x1e"
    payload = b"\x00\x02n1" + b"\x00\x03t/w" + b"\x00\x03off" + b"\x00\x01u" + b"\x00\x02pw"
    assert packet == b"\x10" + bytes((len(variable) + len(payload),)) + variable + payload
    bare = mqtt_codec.connect_packet("abc", 0, False)
    assert bare == b"\x10\x0f\x00\x04MQTT\x04\x00\x00\x00\x00\x03abc"
    raises(ValueError, mqtt_codec.connect_packet, "x", 1, True, None, "pw")


def test_publish_subscribe_and_ack_packets():
    assert mqtt_codec.publish_header("a/b", 5) == b"\x30\x0a\x00\x03a/b"
    assert mqtt_codec.publish_header("a/b", 5, 1, True, 0x1234) == b"\x33\x0c\x00\x03a/b\x12\x34"
    assert mqtt_codec.subscribe_packet(10, "x/#", 1) == b"\x82\x08\x00\x0a\x00\x03x/#\x01"
    assert mqtt_codec.puback_packet(65535) == b"\x40\x02\xff\xff"
    assert mqtt_codec.encode_str("é") == b"\x00\x02\xc3\xa9"


def test_connack_parsing():
    assert mqtt_codec.parse_connack(b"\x01\x00") == (True, 0)
    assert mqtt_codec.parse_connack(b"\x00\x05") == (False, 5)
    raises(ProtocolViolation, mqtt_codec.parse_connack, b"\x02\x00")
    raises(ProtocolViolation, mqtt_codec.parse_connack, b"\x00")
    assert ConnectRefused(4).code == 4
    assert isinstance(ConnectRefused(99), MQTTError)


# -- against scripted fake brokers ----------------------------------------------------------

async def _with_fake_broker(handler, scenario):
    async def serve_until_client_leaves(reader, writer):
        try:
            await handler(reader, writer)
        except (EOFError, OSError):
            pass  # the client hung up, which is how most scenarios end
        writer.close()
        await writer.wait_closed()

    server, port = await _start_fake_broker(serve_until_client_leaves)
    try:
        await scenario(port)
    finally:
        server.close()
        await server.wait_closed()


@bounded(5)
async def test_connack_refusal_raises_connect_refused_with_its_code():
    async def handler(reader, writer):
        await _read_packet(reader)
        writer.write(b"\x20\x02\x00\x05")
        await writer.drain()

    async def scenario(port):
        client = mqtt.MQTTClient("refused", "127.0.0.1", port)
        error = await _expect_error(client.connect(timeout=3), ConnectRefused)
        assert error.code == 5 and client.last_error is error and not client.is_connected

    await _with_fake_broker(handler, scenario)


@bounded(5)
async def test_missing_connack_times_out():
    async def handler(reader, writer):
        await _read_packet(reader)
        await _until_client_leaves(reader)

    async def scenario(port):
        client = mqtt.MQTTClient("mute", "127.0.0.1", port)
        await _expect_error(client.connect(timeout=0.5), Timeout)
        assert isinstance(client.last_error, Timeout)

    await _with_fake_broker(handler, scenario)


MALFORMED = (
    b"\xf0\x00",  # reserved packet type 15
    b"\x30\xff\xff\xff\xff\x01",  # five-digit remaining length
    b"\x30\x03\x00\x09a",  # topic longer than the packet
    b"\x50\x02\x00\x01",  # PUBREC: QoS2 is never requested
    b"\x40\x05\x00\x01\x00\x00\x00",  # PUBACK of the wrong length
)


async def _malformed(garbage):
    async def handler(reader, writer):
        await _accept_connect(reader, writer)
        writer.write(garbage)
        await writer.drain()
        await _until_client_leaves(reader)

    async def scenario(port):
        client = mqtt.MQTTClient("malformed", "127.0.0.1", port, keepalive=0)
        await client.connect(timeout=3)
        await asyncio.wait_for(client.wait_closed(), 2)
        assert isinstance(client.last_error, ProtocolViolation), (garbage, client.last_error)
        assert not client.is_connected
        await _expect_error(client.publish("t", b"x", qos=1), LinkError)

    await _with_fake_broker(handler, scenario)


@bounded(5 * len(MALFORMED))
async def test_malformed_packets_close_the_link_with_protocol_violation():
    for garbage in MALFORMED:
        await _malformed(garbage)


@bounded(8)
async def test_silent_broker_is_detected_and_waiters_fail():
    async def handler(reader, writer):
        await _accept_connect(reader, writer)
        while True:  # swallow PINGREQs without answering
            await _read_packet(reader)

    async def scenario(port):
        client = mqtt.MQTTClient("silent", "127.0.0.1", port, keepalive=2)
        await client.connect(timeout=3)
        outcome = []

        async def publish_unacknowledged():
            outcome.append(await _expect_error(client.publish("t", b"x", qos=1, timeout=30), LinkError))

        asyncio.create_task(publish_unacknowledged())
        await asyncio.wait_for(client.wait_closed(), 5)
        assert isinstance(client.last_error, Timeout), client.last_error
        await _until(lambda: outcome, 1)

    await _with_fake_broker(handler, scenario)


@bounded(10)
async def test_max_inflight_bounds_unacknowledged_publishes():
    seen = {"max": 0, "total": 0}

    async def handler(reader, writer):
        await _accept_connect(reader, writer)
        unacked = []
        while True:
            try:
                first, body = await asyncio.wait_for(_read_packet(reader), 0.1)
            except asyncio.TimeoutError:
                # The client went quiet: it has as many publishes out as it will allow.
                for packet_id in unacked:
                    writer.write(mqtt_codec.puback_packet(packet_id))
                await writer.drain()
                unacked = []
                continue
            if first >> 4 == mqtt_codec.PUBLISH:
                topic_len = struct.unpack("!H", body[:2])[0]
                unacked.append(struct.unpack("!H", body[2 + topic_len:4 + topic_len])[0])
                seen["total"] += 1
                seen["max"] = max(seen["max"], len(unacked))

    async def scenario(port):
        client = mqtt.MQTTClient("inflight", "127.0.0.1", port, max_inflight=3, keepalive=0)
        await client.connect(timeout=3)
        await asyncio.gather(*[client.publish("t", str(i), qos=1) for i in range(10)])
        assert seen == {"max": 3, "total": 10}, seen
        await client.disconnect()

    await _with_fake_broker(handler, scenario)


@bounded(6)
async def test_oversized_publish_is_skipped_and_acknowledged():
    acked = []

    async def handler(reader, writer):
        await _accept_connect(reader, writer)
        big = b"\x00\x03big\x00\x07" + b"z" * 200
        writer.write(b"\x32" + mqtt_codec.encode_length(len(big)) + big)
        writer.write(b"\x30\x09\x00\x05smallok")
        await writer.drain()
        first, body = await _read_packet(reader)
        acked.append((first, body))
        await _until_client_leaves(reader)

    async def scenario(port):
        received = []
        client = mqtt.MQTTClient("small", "127.0.0.1", port, max_packet=64, keepalive=0,
                                 on_message=lambda *message: received.append(message))
        await client.connect(timeout=3)
        await _until(lambda: received and acked)
        assert received == [("small", b"ok", False, 0)], received
        assert acked == [(0x40, b"\x00\x07")], acked
        assert client.dropped == 1 and client.is_connected
        await client.disconnect()

    await _with_fake_broker(handler, scenario)


@bounded(6)
async def test_qos1_delivery_is_acknowledged_after_the_callback_even_if_it_raises():
    events = []

    async def handler(reader, writer):
        await _accept_connect(reader, writer)
        writer.write(b"\x32\x07\x00\x01t\x01\x02hi")
        await writer.drain()
        first, body = await _read_packet(reader)
        events.append(("puback", first, body))
        await _until_client_leaves(reader)

    def on_message(topic, payload, retain, qos):
        events.append(("message", topic, payload, qos))
        raise ValueError("a handler bug")

    async def scenario(port):
        client = mqtt.MQTTClient("cb", "127.0.0.1", port, keepalive=0, on_message=on_message)
        await client.connect(timeout=3)
        await _until(lambda: len(events) == 2)
        assert events == [("message", "t", b"hi", 1), ("puback", 0x40, b"\x01\x02")], events
        assert isinstance(client.callback_error, ValueError) and client.is_connected
        await client.disconnect()

    await _with_fake_broker(handler, scenario)


@bounded(6)
async def test_refused_subscription_and_unacknowledged_publish_leave_the_link_open():
    async def handler(reader, writer):
        await _accept_connect(reader, writer)
        while True:
            first, body = await _read_packet(reader)
            if first == 0x82:
                writer.write(b"\x90\x03" + body[:2] + b"\x80")
                await writer.drain()

    async def scenario(port):
        client = mqtt.MQTTClient("noack", "127.0.0.1", port, keepalive=0)
        await client.connect(timeout=3)
        await _expect_error(client.subscribe("forbidden/#", 1, timeout=2), SubscribeRefused)
        await _expect_error(client.publish("t", b"x", qos=1, timeout=0.3), Timeout)
        assert client.is_connected and not client._link.acks and client._link.inflight == 0
        await client.disconnect()

    await _with_fake_broker(handler, scenario)
