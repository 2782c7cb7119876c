# A node survives any input: whatever one incoming message does, the node rejects that message
# alone with a (rate-limited) bad_message event, changes nothing, and keeps running. Under
# CPython and MicroPython.
import json
import os

from firmware import assignment, flashfile
from firmware.errors import ProtocolError
from unit import Skip, raises

# The controller's epochs are its wall-clock milliseconds (controller/fleet/reconciler.py).
REAL_EPOCH = 1764600000000   # December 2025


class NoHal:
    # What on_message asks a board's HAL for; the dispatch under test needs nothing else.
    def heap_free_now(self):
        return None


def _node(data_dir):
    cfg = {"node": "n1", "topic_prefix": "ef", "profile": {"name": "esp32", "runtime": "micropython"},
           "data_dir": data_dir, "models_dir": data_dir + "/models"}
    try:
        from firmware.node import Node
        return Node(cfg, NoHal())
    except MemoryError:
        raise Skip("the whole node module does not load beside the tests at this heap")


def _dir(name):
    path = "/tmp/edgefleet-input-" + name
    flashfile.ensure_dir(path)
    for f in os.listdir(path):
        os.remove(path + "/" + f)
    return path


def _assign(epoch, wl=None):
    return json.dumps({"v": 1, "epoch": epoch, "wl": wl or []})


def _bad_events(node):
    out = []
    for kind, payload in node.pending:
        ev = json.loads(payload)
        if kind == "event" and ev["kind"] == "bad_message":
            out.append(ev)
    return out


def test_epochs_beyond_any_controller_clock_are_refused():
    for forged in (2 ** 62, 4102444800001, -1):
        assert raises(ProtocolError, assignment.accept, None, {"epoch": forged}).field == "epoch"
        assert raises(ProtocolError, assignment.accept, REAL_EPOCH, {"epoch": forged}).field == "epoch"
    assert assignment.accept(None, {"epoch": REAL_EPOCH})
    assert assignment.accept(REAL_EPOCH, {"epoch": REAL_EPOCH + 1})


def test_a_forged_epoch_is_rejected_and_the_real_controller_keeps_its_node():
    d = _dir("epoch")
    node = _node(d)
    node.on_message("ef/node/n1/assign", _assign(2 ** 62), True, 1)
    assert node.applied_epoch is None and flashfile.read(d + "/assign.json") is None
    (ev,) = _bad_events(node)
    assert "epoch" in ev["msg"] and ev["data"]["topic"] == "ef/node/n1/assign", ev
    node.on_message("ef/node/n1/assign", _assign(REAL_EPOCH), True, 1)
    assert node.applied_epoch == REAL_EPOCH and flashfile.read(d + "/assign.json")["epoch"] == REAL_EPOCH
    # A node that cached a forged epoch before this check: its boot ignores the cache.
    raises(ProtocolError, node.apply_assignment, {"v": 1, "epoch": 2 ** 62, "wl": []}, True)
    assert node.applied_epoch == REAL_EPOCH


def test_any_failure_while_handling_a_message_rejects_it_alone_with_a_rate_limited_event():
    d = _dir("fail")
    node = _node(d + "/gone")   # the flash refuses every write: an OSError, not a ProtocolError
    spec = {"id": "w1", "model": "m", "rate": 1, "input": {"kind": "samples"}}
    for i in range(5):
        node.on_message("ef/node/n1/assign", _assign(REAL_EPOCH + i, [spec]), True, 1)
    # Nothing changed: no assignment applied, none running.
    assert node.applied_epoch is None and node.assigned == [] and not node.workers, node.assigned
    events = _bad_events(node)
    # Reported at the 1st, 2nd, 4th, 8th... rejection: a flood of bad input is no flood of events.
    assert [e["data"]["count"] for e in events] == [1, 2, 4] and node.bad == 5, (events, node.bad)
    assert "Error" in events[0]["msg"], events[0]   # OSError or its CPython subclass
    for _ in range(3):
        node.on_message("ef/node/n1/ack", b'{"v": 1, "boot": "x", "seq": 1}', False, 1)
    events = _bad_events(node)
    assert [e["data"]["count"] for e in events] == [1, 2, 4, 8] and "boot" in events[3]["msg"], events
    # The node keeps going: the next good message is applied.
    node.data_dir = d
    node.on_message("ef/node/n1/assign", _assign(REAL_EPOCH, [spec]), True, 1)
    assert node.applied_epoch == REAL_EPOCH and node.assigned == [spec]


def test_inputs_of_a_topic_workload_reach_its_source_and_bad_ones_are_rejected_alone():
    import binascii
    node = _node(_dir("topic"))   # first: the node module is the bigger part
    try:
        from firmware.source_topic import TopicSource
    except MemoryError:
        raise Skip("the node and the topic source do not load beside the tests at this heap")

    class Model:
        input_size = 4

    class Worker:
        source = TopicSource({"kind": "topic"}, Model())

    node.workers["cam"] = Worker()
    good = json.dumps({"v": 1, "seq": 3, "data": binascii.b2a_base64(b"abcd").decode().strip()})
    node.on_message("ef/wl/cam/input", good, False, 1)
    assert Worker.source.waiting() == 1 and Worker.source.seen == 3
    # Wrong size, a forged field, a bad topic: each rejected with its reason, nothing served.
    node.on_message("ef/wl/cam/input", json.dumps({"v": 1, "seq": 4, "data": "YWJj"}), False, 1)
    node.on_message("ef/wl/cam/input", json.dumps({"v": 1, "seq": "5", "data": "YWJjZA=="}), False, 1)
    node.on_message("ef/wl/CAM!/input", good, False, 1)
    msgs = [e["msg"] for e in _bad_events(node)]
    assert node.bad == 3 and "3 bytes, the model takes 4" in msgs[0] and "seq" in msgs[1], msgs
    assert Worker.source.waiting() == 1 and Worker.source.rejected == 1
    # An input for a workload this node does not run (it just left): ignored, not an error.
    node.on_message("ef/wl/other/input", good, False, 1)
    assert node.bad == 3
