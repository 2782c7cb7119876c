"""Retention: results and events pruned by age and by count, in the background, on every backend,
without a pruned result ever being stored twice or left unacknowledged."""
import json
import time

import pytest

from edgefleet.controller.fleet.controller import FleetController
from edgefleet.controller.fleet.retention import DAY_S, RetentionPolicy, RetentionWorker, prune
from edgefleet.controller.store import open_registry

from test_controller import MANIFESTS, Clock, hello

NOW = 1_700_000_000.0


def _result(node, seq, boot=1):
    return {"node": node, "boot": boot, "seq": seq, "wl": "w", "label": 1, "truth": 1, "score": 0.5, "us": 10,
            "up": seq}


def test_results_and_events_older_than_the_period_go_and_pruned_results_still_count(registry_location):
    registry = open_registry(registry_location)
    for seq in range(1, 11):   # seq 1..6 ten days old, 7..10 a day old
        registry.store_result(_result("a", seq), now=NOW - (10 if seq <= 6 else 1) * DAY_S + seq)
        registry.add_event("a", "info", "k", "e%d" % seq, now=NOW - (40 if seq <= 3 else 1) * DAY_S + seq)
    registry.store_result(_result("b", 1), now=NOW - 9 * DAY_S)
    registry.commit()
    pruned = prune(registry, RetentionPolicy(keep_days=7, keep_event_days=30), now=NOW, batch=4)
    assert pruned == {"results": 7, "events": 3}
    assert registry.result_counts() == {"a": 4}
    assert [e["msg"] for e in registry.events()] == ["e%d" % i for i in range(4, 11)]
    # What was pruned still counts as stored: acknowledged past it, never stored again.
    assert registry.contiguous_results("a", 1) == 10 and registry.contiguous_results("b", 1) == 1
    assert not registry.store_result(_result("a", 3), now=NOW) and not registry.store_result(_result("b", 1), now=NOW)
    assert registry.store_result(_result("a", 11), now=NOW) and registry.contiguous_results("a", 1) == 11
    assert registry.store_result(_result("a", 1, boot=2), now=NOW)    # another boot has no floor
    registry.commit()
    assert prune(registry, RetentionPolicy(keep_days=7), now=NOW) == {"results": 0, "events": 0}
    registry.close()


def test_the_count_bound_keeps_the_newest(registry_location):
    registry = open_registry(registry_location)
    for seq in range(1, 101):
        registry.store_result(_result("n%d" % (seq % 3), seq), now=NOW - 1000 + seq)
    registry.commit()
    assert prune(registry, RetentionPolicy(keep_results=30), now=NOW, batch=7)["results"] == 70
    assert sum(registry.result_counts().values()) == 30
    assert registry.stored_result("n0", 1, 72) is not None and registry.stored_result("n1", 1, 70) is None
    registry.close()


def test_a_pruned_result_redelivered_is_acknowledged_and_the_stream_continues(registry_location):
    """Through the controller: results with stream positions, pruned; a late copy of one is acked
    and not stored; the lane continues from its newest accepted position."""
    registry = open_registry(registry_location)
    clock = Clock()
    ctl = FleetController(registry, manifests=MANIFESTS, clock=clock)
    ctl.declare([{"id": "w", "model": "digits_dense", "rate": 1}])
    ctl.handle("ef/node/mcu-1/hello", hello("mcu-1"))
    ctl.tick()
    for seq in range(1, 6):
        ctl.handle("ef/node/mcu-1/result", json.dumps(dict(_result("mcu-1", seq), v=1, **{"in": seq - 1})))
    ctl.flush_acks()
    pruned = prune(registry, RetentionPolicy(keep_days=1), now=clock.now + 2 * DAY_S)
    assert pruned["results"] == 5 and registry.result_counts() == {}
    assert registry.lane_marks("w", 0)[0] == 4   # the lane's newest position stays
    registry.close()
    registry = open_registry(registry_location)   # a restarted controller, nothing in memory
    ctl = FleetController(registry, manifests=MANIFESTS, clock=clock)
    ctl.handle("ef/node/mcu-1/result", json.dumps(dict(_result("mcu-1", 3), v=1, **{"in": 2})))
    assert [json.loads(e.payload)["seq"] for e in ctl.flush_acks()] == [5]
    assert registry.result_counts() == {} and ctl.results_total == 0
    ctl.handle("ef/node/mcu-1/result", json.dumps(dict(_result("mcu-1", 6), v=1, **{"in": 5})))
    assert [json.loads(e.payload)["seq"] for e in ctl.flush_acks()] == [6]
    assert registry.result_counts() == {"mcu-1": 1}
    registry.close()


def test_the_worker_prunes_in_the_background_while_the_controller_writes(registry_location):
    writer = open_registry(registry_location)
    old = time.time() - 3 * DAY_S
    for seq in range(1, 501):
        writer.store_result(_result("a", seq), now=old)
    writer.commit()
    worker = RetentionWorker(registry_location, RetentionPolicy(keep_days=1), every_s=0.05).start()
    try:
        for seq in range(501, 601):    # the controller keeps storing meanwhile
            writer.store_result(_result("a", seq))
            writer.commit()
        deadline = time.monotonic() + 10
        while worker.pruned["results"] < 500 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    assert worker.pruned["results"] == 500 and worker.runs >= 1
    assert writer.result_counts() == {"a": 100} and writer.contiguous_results("a", 1) == 600
    writer.close()


def test_a_policy_must_keep_something():
    with pytest.raises(ValueError, match="keep_days"):
        RetentionPolicy(keep_days=0)
    with pytest.raises(ValueError, match="keep_results"):
        RetentionPolicy(keep_results=-1)
