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


def test_heartbeats_in_a_batch_are_written_at_once_and_each_node_judged_as_alone(registry_location):
    registry = open_registry(registry_location)
    clock = [1000.0]
    follower = Follower(registry, "ef", clock=lambda: clock[0])
    for node in ("a", "b", "c"):
        follower.handle("ef/node/%s/hello" % node, hello(node))
    registry.set_node_state("b", "offline")
    registry.commit()
    clock[0] += 5.0
    bulk = []
    write_all = registry.record_heartbeats
    registry.record_heartbeats = lambda beats, now=None: bulk.append([n for n, _ in beats]) or write_all(beats, now)
    follower.handle_batch([("ef/node/c/hb", heartbeat("c", seq=1)), ("ef/node/a/hb", heartbeat("a", seq=1)),
                           ("ef/node/b/hb", heartbeat("b", seq=1)), ("ef/node/c/hb", heartbeat("c", boot=2, seq=1)),
                           ("ef/node/z/hb", heartbeat("z", seq=1)),        # before its hello: no row
                           ("ef/node/a/hb", json.dumps({"v": 1, "node": "a"})),   # malformed: rejected alone
                           ("ef/node/d/hello", hello("d")), ("ef/node/d/hb", heartbeat("d", seq=1))])
    # One write for a, b, c (its last heartbeat) and z; d's heartbeat follows its hello in order.
    assert bulk == [["a", "b", "c", "z"]]
    nodes = {n["id"]: n for n in registry.nodes()}
    assert set(nodes) == {"a", "b", "c", "d"}
    assert all(nodes[n]["telemetry"]["at"] == 1005.0 and nodes[n]["last_seen"] == 1005.0 for n in "abcd")
    assert nodes["b"]["state"] == "online"                           # offline, heartbeating again
    assert nodes["c"]["boot"] == 2 and nodes["c"]["state"] == "online"   # its last heartbeat said boot 2
    kinds = [(e["node"], e["kind"]) for e in registry.events()]
    assert kinds[3:] == [("b", "node_online"), ("c", "registered"), ("d", "registered"), ("", "bad_message")]
    assert follower.rejected == 1
    registry.close()


def _will(node):
    return json.dumps({"v": 1, "node": node, "state": "offline", "boot": 1})


def _lease(seq):
    return json.dumps({"v": 1, "ctrl": "ctl-a", "seq": seq})


def test_a_replica_takes_a_will_only_while_the_leaders_leases_reach_it(registry_location):
    # A broker that stalled sends the will of every client it then finds past its keepalive; a
    # replica whose broker path is in doubt holds them, as the leader does (liveness.py), and
    # the leader's failure detector judges those nodes by their silence instead.
    registry = open_registry(registry_location)
    clock = [1000.0]
    follower = Follower(registry, "ef", clock=lambda: clock[0])
    for node in ("a", "b", "c"):
        follower.handle("ef/node/%s/hello" % node, hello(node))
    follower.handle("ef/node/a/status", _will("a"))       # no lease heard yet
    assert registry.node("a")["state"] == "online" and follower.wills_held == 1
    follower.handle("ef/ctrl/lease", _lease(1))
    clock[0] += 1.0
    follower.handle("ef/node/b/status", _will("b"))       # leases coming through: taken
    assert registry.node("b")["state"] == "offline"
    clock[0] += 10.0                                       # the broker stalls: no lease for 10 s
    follower.handle("ef/node/c/status", _will("c"))
    assert registry.node("c")["state"] == "online" and follower.wills_held == 2
    follower.handle("ef/ctrl/lease", _lease(2))            # back; wills wait out the grace period
    clock[0] += 1.0
    follower.handle("ef/node/c/status", _will("c"))
    assert registry.node("c")["state"] == "online" and follower.wills_held == 3
    for seq in range(3, 9):
        clock[0] += 1.0
        follower.handle("ef/ctrl/lease", _lease(seq))
    follower.handle("ef/node/c/status", _will("c"))
    assert registry.node("c")["state"] == "offline"
    assert follower.rejected == 0
    registry.close()


def test_a_batch_does_not_wait_on_rows_a_frozen_replica_holds(registry_location):
    """A replica frozen mid-transaction (a leader paused past its lease) holds its nodes' rows
    until it runs again: another replica gives up on them within LOCK_WAIT_S and takes the
    batch again later, rather than standing still (and never claiming the lease)."""
    import time
    from edgefleet.controller.fleet.follower import LOCK_WAIT_S
    registry = open_registry(registry_location)
    follower = Follower(registry, "ef")
    follower.handle("ef/node/a/hello", hello("a"))
    if not registry_location.startswith("postgresql"):
        return   # one writer at a time: SQLite has no rows to hold
    frozen = open_registry(registry_location)
    frozen.lock_nodes(["a"])                       # its transaction stays open
    started = time.monotonic()
    follower.handle_batch([("ef/node/a/hb", heartbeat("a", seq=7))])
    assert time.monotonic() - started < LOCK_WAIT_S + 2
    assert [t for t, _ in follower.deferred] == ["ef/node/a/hb"] and follower.rejected == 0
    frozen.rollback()                              # it runs again
    deferred, follower.deferred = follower.deferred, []
    follower.handle_batch(deferred)
    assert registry.node("a")["telemetry"]["seq"] == 7 and not follower.deferred
    frozen.close()
    registry.close()
