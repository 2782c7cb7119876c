# MQTT 3.1.1 packet encoding and decoding for firmware/mqtt.py, in the MicroPython/CPython common
# subset. Kept apart from the client so that MicroPython compiles each within a small heap.
import struct

from .errors import ProtocolViolation

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

MAX_REMAINING_LENGTH = 268435455  # the most four 7-bit length digits can express
_SKIP_CHUNK = 256


def encode_length(n):
    """The variable-byte encoding of an MQTT remaining length."""
    if n < 0 or n > MAX_REMAINING_LENGTH:
        raise ValueError("remaining length %d out of range" % n)
    out = bytearray()
    while True:
        digit = n & 0x7F
        n >>= 7
        if n:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def encode_str(text):
    """A UTF-8 string (str, or bytes taken as already encoded) with its 2-byte length prefix."""
    data = text.encode() if isinstance(text, str) else text
    if len(data) > 0xFFFF:
        raise ValueError("MQTT string of %d bytes is over 65535" % len(data))
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id, keepalive, clean_session=True, user=None, password=None, will=None):
    """CONNECT; `will` is (topic, payload, qos, retain) or None."""
    if password is not None and user is None:
        raise ValueError("MQTT 3.1.1 allows a password only together with a user name")
    flags = 0x02 if clean_session else 0
    payload = encode_str(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += encode_str(topic) + encode_str(message)
    if user is not None:
        flags |= 0x80
        payload += encode_str(user)
    if password is not None:
        flags |= 0x40
        payload += encode_str(password)
    variable = b"\x00\x04MQTT\x04" + bytes((flags,)) + struct.pack("!H", keepalive)
    return b"\x10" + encode_length(len(variable) + len(payload)) + variable + payload


def publish_header(topic, payload_len, qos=0, retain=False, packet_id=0):
    """Everything of a PUBLISH packet that precedes its payload."""
    variable = encode_str(topic)
    if qos:
        variable += struct.pack("!H", packet_id)
    first = (PUBLISH << 4) | (qos << 1) | (1 if retain else 0)
    return bytes((first,)) + encode_length(len(variable) + payload_len) + variable


def subscribe_packet(packet_id, topic, qos):
    body = struct.pack("!H", packet_id) + encode_str(topic) + bytes((qos,))
    # SUBSCRIBE's fixed-header flags are reserved as 0b0010 by the spec.
    return b"\x82" + encode_length(len(body)) + body


def unsubscribe_packet(packet_id, topic):
    body = struct.pack("!H", packet_id) + encode_str(topic)
    return b"\xa2" + encode_length(len(body)) + body


def puback_packet(packet_id):
    return b"\x40\x02" + struct.pack("!H", packet_id)


def parse_connack(body):
    """(session_present, return_code) from a CONNACK body."""
    if len(body) != 2 or body[0] & 0xFE:
        raise ProtocolViolation("malformed CONNACK %r" % (bytes(body),))
    return bool(body[0] & 1), body[1]


async def read_fixed_header(reader):
    """(first byte, remaining length) of the next packet on a stream."""
    first = (await reader.readexactly(1))[0]
    length = 0
    for shift in (0, 7, 14, 21):
        digit = (await reader.readexactly(1))[0]
        length |= (digit & 0x7F) << shift
        if digit < 0x80:
            return first, length
    raise ProtocolViolation("remaining length runs past 4 bytes")


async def skip_bytes(reader, n):
    while n:
        n -= len(await reader.readexactly(min(n, _SKIP_CHUNK)))
