"""The chaos soak (controller/sim/chaos.py, tools/bench/chaos.py), short and seeded: six boards,
each fault kind at least once (board kill, board SIGSTOP, cut link, broker kill, broker SIGSTOP,
controller kill), one at a time, then the fleet restored and settled. Nothing the nodes accepted
may be lost or stored twice, no input processed twice, no lane silent for long after a fault, no
node falsely declared offline or pushed into safe mode, and a controller that idles while its
broker is away."""
import json
import random

import pytest

from edgefleet.controller.sim import chaos

pytestmark = pytest.mark.e2e

SEED = 7
DURATION_S = 100


def explain(summary, details):
    """One line per missed target, with the lane, fault, node and times behind it."""
    lines = []
    for key, value, target in chaos.missed_targets(summary):
        if key == "lost":
            why = details["lost"]
        elif key == "duplicates":
            why = details["duplicates"]
        elif key == "reinferred_inputs":
            why = details["reinferred"]
        elif key == "lane_gap_max_s":
            why = [r for r in details["lane_recovery"] if r["gap_s"] > target]
        elif key == "false_offlines":
            why = details["false_offlines"]
        elif key == "safe_mode_entries":
            why = details["safe_mode"]
        else:
            why = details["broker_down_cpu"]
        lines.append("%s = %s (target %s): %s" % (key, value, target, json.dumps(why)))
    return lines


@pytest.mark.timeout(280)
def test_chaos_soak_every_fault_kind_loses_nothing_and_recovers(tmp_path):
    summary, details = chaos.run(str(tmp_path), DURATION_S, SEED, random.Random(SEED), settle_timeout=60.0,
                                 final_wait_s=20.0)
    print(json.dumps(summary))
    assert set(summary["faults"]) == set(chaos.FAULT_KINDS), summary["faults"]
    assert summary["results"] > 0 and details["settled"], (
        "the fleet did not catch up within 60 s after the faults (registry and logs in %s)" % tmp_path)
    problems = explain(summary, details)
    assert not problems, "chaos run (seed %d) missed its targets; faults (s since the fleet was up): %s\n%s" % (
        SEED, "; ".join("%s %s %s..%s %s" % (f["kind"], f["target"], f["start"], f["end"], f["note"])
                        for f in details["faults"]), "\n".join(problems))


def test_a_measurement_missing_after_a_broker_outage_is_a_missed_target():
    calm = {"lost": 0, "duplicates": 0, "reinferred_inputs": 0, "lane_gap_max_s": 3.0, "false_offlines": 0,
            "safe_mode_entries": 0, "controller_cpu_broker_down_pct": 0.5}
    assert chaos.missed_targets(dict(calm, faults={"broker_kill": 1})) == []
    unmeasured = dict(calm, faults={"broker_stop": 1}, lane_gap_max_s=None)
    assert chaos.missed_targets(unmeasured) == [("lane_gap_max_s", None, 10.0)]
    # Without a broker outage there may be nothing to measure.
    assert chaos.missed_targets(dict(calm, faults={"link_cut": 2}, controller_cpu_broker_down_pct=None)) == []
    assert chaos.missed_targets(dict(calm, faults={"board_kill": 1}, lane_gap_max_s=10.5)) == [
        ("lane_gap_max_s", 10.5, 10.0)]
