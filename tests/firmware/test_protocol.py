# The protocol vectors, checked by the firmware's codec under CPython and MicroPython.
import json

from firmware import protocol
from firmware.errors import ProtocolError
from paths import repo_path
from unit import raises


def _vectors():
    with open(repo_path("tests", "vectors", "messages.json")) as f:
        return json.load(f)


def test_message_vectors():
    vectors = _vectors()["messages"]
    for i, vec in enumerate(vectors):
        if vec.get("host"):   # a kind boards never receive (controller/opwire.py)
            continue
        if vec["valid"]:
            msg = protocol.decode(vec["kind"], vec["payload"].encode())
            if msg["v"] != 1:
                raise AssertionError("vector %d decoded wrong" % i)
        else:
            err = raises(ProtocolError, protocol.decode, vec["kind"], vec["payload"])
            if vec["field"] is not None and err.field != vec["field"]:
                raise AssertionError("vector %d (%s): expected field %r, error names %r: %s"
                                     % (i, vec["kind"], vec["field"], err.field, err))


def test_topic_vectors():
    for vec in _vectors()["topics"]:
        if vec.get("host"):
            continue
        if vec.get("error"):
            raises(ProtocolError, protocol.parse_topic, "ef", vec["topic"])
        else:
            node, kind = protocol.parse_topic("ef", vec["topic"])
            assert (node, kind) == (vec["node"], vec["kind"]), vec["topic"]


def test_encode_round_trip_and_refuses_bad_messages():
    msg = {"v": 1, "boot": 2, "seq": 9}
    assert protocol.decode("ack", protocol.encode("ack", msg)) == msg
    raises(ProtocolError, protocol.encode, "ack", {"v": 1, "boot": 2})


def test_topics_and_delivery_follow_the_table():
    assert protocol.node_topic("ef", "mcu-1", "hb") == "ef/node/mcu-1/hb"
    assert protocol.delivery("hb") == (0, False)
    assert protocol.delivery("assign") == (1, True)
    for kind in protocol.NODE_TOPIC_KINDS:
        assert protocol.limit(kind) and protocol.delivery(kind)[0] in (0, 1)
