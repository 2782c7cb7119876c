# Fencing (firmware/lease.py) and live-migration retuning (firmware/assignment.py), pure logic,
# under CPython and MicroPython.
from firmware import assignment
from firmware.lease import Lease


def _spec(wid, start=0, until=None, rate=1):
    source = {"kind": "samples", "start": start}
    if until is not None:
        source["until"] = until
    return {"id": wid, "model": "m", "rate": rate, "input": source}


def test_no_lease_seen_never_fences():
    lease = Lease(3)
    for _ in range(10):
        assert not lease.beat()
    assert not lease.fenced


def test_missing_k_heartbeats_fences_until_lease_and_assignment_return():
    lease = Lease(3)
    lease.renew()
    for _ in range(3):
        assert not lease.beat()
    assert not lease.fenced
    assert lease.beat()  # the fourth heartbeat without a lease
    assert lease.fenced
    assert not lease.beat()  # reported once
    # An assignment alone (e.g. the broker's retained copy) does not lift the fence...
    assert not lease.confirm() and lease.fenced
    # ...nor does the lease alone...
    lease.renew()
    assert lease.fenced
    # ...the controller's assignment after the lease returned does.
    assert lease.confirm() and not lease.fenced


def test_a_lease_before_the_deadline_keeps_the_node_unfenced():
    lease = Lease(2)
    lease.renew()
    for _ in range(20):
        lease.beat()
        lease.beat()
        lease.renew()
    assert not lease.fenced


def test_controller_going_offline_releases_the_fence():
    lease = Lease(1)
    lease.renew()
    lease.beat()
    lease.beat()
    assert lease.fenced
    lease.release()
    assert not lease.fenced and not lease.beat()


def test_a_new_hand_over_point_retunes_instead_of_restarting():
    running = {"a": _spec("a", start=10), "b": _spec("b")}
    desired = [_spec("a", start=10, until=50), _spec("b")]
    assert assignment.changes(running, desired) == ([], [])
    retuned = assignment.retuned(running, desired)
    assert [s["input"]["until"] for s in retuned] == [50]
    # A new start position is a new stream: restart.
    stop, start = assignment.changes(running, [_spec("a", start=20), _spec("b")])
    assert stop == ["a"] and [s["id"] for s in start] == ["a"]
    assert assignment.retuned(running, [_spec("a", start=10), _spec("b")]) == []
