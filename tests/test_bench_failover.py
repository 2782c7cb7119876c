"""The failover benchmark (tools/bench/failover.py) at small scale, and the simulated boards'
heartbeat jitter it runs with (sim.json `hb_jitter`, boards/hal_sim.py)."""
import importlib.util
import json
import math
import os

import pytest

from edgefleet.boards.hal_mock import MockHal
from edgefleet.boards.hal_sim import SimHal

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "bench", "failover.py")
KEYS = {"nodes", "p50_s", "p99_s", "false_failovers", "baseline_p50_s", "baseline_p99_s", "baseline_false_failovers",
        "unrecovered", "baseline_unrecovered", "hb_interval_std_s"}


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_failover", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sim_heartbeat_jitter_spreads_the_interval_within_its_fraction(tmp_path):
    sim_file = tmp_path / "sim.json"
    profile = {"power": {"source": "mains", "idle_mw": 100, "active_mw": 200}}
    hal = SimHal(MockHal(profile), profile, str(sim_file))
    assert [hal.heartbeat_delay_ms(1000) for _ in range(5)] == [1000] * 5   # default: off
    sim_file.write_text(json.dumps({"hb_jitter": 0.2}))
    hal._sim_read_at = None   # read the file now, not 200 ms later
    delays = [hal.heartbeat_delay_ms(1000) for _ in range(4000)]
    assert 800 <= min(delays) < 820 and 1180 < max(delays) <= 1200
    mean = sum(delays) / len(delays)
    std = math.sqrt(sum((d - mean) ** 2 for d in delays) / len(delays))
    assert abs(mean - 1000) < 10
    assert 100 < std < 130   # uniform over +-200 ms: 115 ms


@pytest.mark.e2e
@pytest.mark.micropython
def test_failover_bench_moves_a_killed_nodes_workload_and_prints_its_keys(capsys):
    bench = load_bench()
    out = bench.main(["--nodes", "5", "--rounds", "1", "--kills", "1", "--hangs", "0", "--soak", "4"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == out
    assert KEYS <= set(line)
    assert line["nodes"] == 5 and line["trials"] == 1 and line["baseline_trials"] == 1
    # The killed node's workload produced a stored result from another node (the trial's time is
    # measured to it), under both detectors, with nothing moved off a live node.
    assert line["unrecovered"] == 0 and line["baseline_unrecovered"] == 0
    assert 0 < line["p50_s"] < 5
    # The fixed timeout runs from the last heartbeat the controller had, which came up to one
    # (jittered) interval before the kill.
    assert line["baseline_p50_s"] > bench.BASELINE_TIMEOUT_S - line["hb_interval_mean_s"] * (1 + bench.JITTER)
    assert line["false_failovers"] == 0 and line["baseline_false_failovers"] == 0
    assert line["stream_gaps"] == 0 and line["baseline_stream_gaps"] == 0
    # The boards' heartbeats really were jittered, as the controller saw them arrive.
    assert line["hb_interval_std_s"] > 0.07
    # Every trial's time is in the line too (tools/docs_figures.py draws them).
    assert len(line["kill_trials_s"]) == 1 and abs(line["kill_trials_s"][0] - line["p50_s"]) < 0.01
    assert len(line["baseline_kill_trials_s"]) == 1
