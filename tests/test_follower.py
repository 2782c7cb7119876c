"""A controller replica's ingest (controller/fleet/follower.py): what it records, in batches, and
a batch with a message that fails taken again one by one."""
import json

from edgefleet.controller.fleet.follower import Follower
from edgefleet.controller.store import open_registry

from test_controller import heartbeat, hello, result


def _event(node, text):
    return json.dumps({"v": 1, "node": node, "boot": 1, "up": 5, "level": "info", "kind": "note", "msg": text})


def test_a_batch_is_recorded_in_one_go_and_acknowledged_from_the_registry(registry_location):
    registry = open_registry(registry_location)
    follower = Follower(registry, "ef")
    follower.handle_batch([("ef/node/a/hello", hello("a")), ("ef/node/a/hb", heartbeat("a")),
                           ("ef/node/a/result", result("a", 1)), ("ef/node/a/result", result("a", 2)),
                           ("ef/node/a/result", b"{not json"), ("ef/node/a/event", _event("a", "hi"))])
    node = registry.node("a")
    assert node["state"] == "online" and node["telemetry"]["cpu"] == 5.0
    assert registry.result_counts() == {"a": 2}
    assert [json.loads(e.payload) for e in follower.tick()] == [{"v": 1, "boot": 1, "seq": 2}]
    assert [e["kind"] for e in registry.events()] == ["registered", "note", "bad_message"]
    # Another replica stored result 3; this one stores 4 and acknowledges both.
    other = Follower(open_registry(registry_location), "ef")
    other.handle("ef/node/a/result", result("a", 3))
    follower.handle_batch([("ef/node/a/result", result("a", 4)), ("ef/node/a/hb", heartbeat("a", seq=2))])
    assert [json.loads(e.payload)["seq"] for e in follower.tick()] == [4]
    other.registry.close()
    registry.close()


def test_a_message_that_fails_in_a_batch_is_rejected_alone(registry_location, monkeypatch):
    registry = open_registry(registry_location)
    follower = Follower(registry, "ef")
    follower.handle("ef/node/a/hello", hello("a"))
    recorded = Follower._on_event

    def choke(self, node_id, msg, now):
        if msg["msg"] == "boom":
            raise RuntimeError("a handler bug")
        return recorded(self, node_id, msg, now)

    monkeypatch.setattr(Follower, "_on_event", choke)
    follower.handle_batch([("ef/node/a/result", result("a", 1)), ("ef/node/a/event", _event("a", "boom")),
                           ("ef/node/a/event", _event("a", "fine")), ("ef/node/a/result", result("a", 2))])
    assert registry.result_counts() == {"a": 2} and follower.rejected == 1
    events = registry.events()
    assert [e["kind"] for e in events] == ["registered", "bad_message", "note"]
    assert "a handler bug" in events[1]["msg"] and events[2]["msg"] == "fine"
    assert [json.loads(e.payload)["seq"] for e in follower.tick()] == [2]
    registry.close()
