# Random hostile input through the node's own parsers, under the real MicroPython interpreter at
# every MCU heap (and CPython): the MQTT codec refuses what it cannot parse with its own errors,
# and no incoming message - random bytes, random JSON, valid messages with a field replaced by
# anything - escapes the node's dispatch. Seeded, so a failure repeats.
import gc
import json
import random

from firmware import flashfile
from firmware.errors import ProtocolViolation
from firmware.mqtt_codec import parse_connack, read_fixed_header, skip_bytes
from unit import Skip

SEED = 15
CASES = 300
REAL_EPOCH = 1764600000000
NODE_KINDS = ("assign", "ack", "cmd", "ota", "hb", "result")


class BytesReader:
    """An asyncio-style reader over fixed bytes: EOFError when they run out, as a closed link."""

    def __init__(self, data):
        self.data = data
        self.at = 0

    async def readexactly(self, n):
        if self.at + n > len(self.data):
            raise EOFError()
        self.at += n
        return self.data[self.at - n:self.at]


def _bytes(rng, most):
    out = bytearray(rng.getrandbits(16) % (most + 1))
    for i in range(len(out)):
        out[i] = rng.getrandbits(8)
    return bytes(out)


def _value(rng, depth=0):
    pick = rng.getrandbits(4)
    if pick == 0:
        return 2 ** 63 + rng.getrandbits(8)
    if pick == 1:
        return -(rng.getrandbits(30) << 40)
    if pick == 2:
        return "x" * (rng.getrandbits(12) % 1500)
    if pick == 3 and depth < 4:
        return [_value(rng, depth + 1) for _ in range(rng.getrandbits(2))]
    if pick == 4 and depth < 4:
        return {"epoch": _value(rng, depth + 1), "id": _value(rng, depth + 1)}
    if pick == 5:
        return None
    if pick == 6:
        return 1.5
    if pick == 7:
        return True
    return rng.getrandbits(20)


def _valid(kind):
    return {"assign": {"v": 1, "epoch": REAL_EPOCH, "wl": []}, "ack": {"v": 1, "boot": 1, "seq": 3},
            "cmd": {"v": 1, "id": "c1", "op": "ping"}, "ota": {"v": 1, "id": "u1", "op": "abort"},
            "hb": {"v": 1}, "result": {"v": 1}}[kind]


def _message(rng):
    kind = NODE_KINDS[rng.getrandbits(8) % len(NODE_KINDS)]
    node = "n1" if rng.getrandbits(2) else "other"
    topic = "ef/node/%s/%s" % (node, kind)
    roll = rng.getrandbits(2)
    if roll == 0:
        return topic, _bytes(rng, 200)
    if roll == 1:
        deep = rng.getrandbits(10) + 1
        return topic, b"[" * deep + b"]" * deep
    msg = _valid(kind)
    keys = list(msg) + ["wl", "off", "data"]
    msg[keys[rng.getrandbits(8) % len(keys)]] = _value(rng)
    return topic, json.dumps(msg).encode()


async def test_the_mqtt_codec_refuses_random_bytes_with_its_own_errors():
    rng = random.Random(SEED) if hasattr(random, "Random") else None
    if rng is None:
        random.seed(SEED)
        rng = random
    for _ in range(CASES):
        data = _bytes(rng, 8)
        try:
            first, length = await read_fixed_header(BytesReader(data))
            assert 0 <= length < 2 ** 28 and 0 <= first < 256
            await skip_bytes(BytesReader(data), min(length, len(data)))
        except (ProtocolViolation, EOFError):
            pass
        try:
            parse_connack(data[:2])
        except ProtocolViolation:
            pass


def test_no_random_message_escapes_the_nodes_dispatch():
    rng = random.Random(SEED) if hasattr(random, "Random") else None
    if rng is None:
        random.seed(SEED)
        rng = random
    path = "/tmp/edgefleet-fuzz-node"
    flashfile.ensure_dir(path)
    cfg = {"node": "n1", "topic_prefix": "ef", "profile": {"name": "esp32", "runtime": "micropython"},
           "data_dir": path, "models_dir": path + "/models"}
    try:
        from firmware.node import Node
        from test_node_input import NoHal
        node = Node(cfg, NoHal())
    except MemoryError:
        raise Skip("the whole node module does not load beside the tests at this heap")
    delivered = 0
    for i in range(CASES):
        # The board's heap is mostly the node's: the harness makes room for each case first,
        # and a case the harness itself has no heap to build is not sent.
        gc.collect()
        try:
            topic, payload = _message(rng)
        except MemoryError:
            continue
        node.on_message(topic, payload, bool(i & 1), 1)   # raises nothing, whatever arrives
        delivered += 1
        del node.pending[:]
        topic = payload = None
    assert delivered >= CASES // 2, delivered
    # Still itself: a real assignment from the controller is applied.
    node.on_message("ef/node/n1/assign", json.dumps({"v": 1, "epoch": REAL_EPOCH + 5, "wl": []}), True, 1)
    assert node.applied_epoch == REAL_EPOCH + 5, node.applied_epoch
    assert node.bad > 0
