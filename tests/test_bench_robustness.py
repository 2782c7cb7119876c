"""The robustness benchmark (tools/bench/robustness.py) at small scale: seeded hostile messages
and the issue's attack corpus, against this controller and the one before issue 15."""
import importlib.util
import os
import subprocess

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "bench", "robustness.py")


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_robustness", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.e2e
def test_no_hostile_message_stops_the_controller_while_the_baseline_falls(mosquitto):
    bench = load_bench()
    line = bench.main(["--cases", "400", "--skip-signing"])
    assert line["fuzz_failures"] == 0 and line["fuzz_lease_every_tick"], line
    assert line["controller_alive"] and line["corpus_cases"] == 27
    has_history = subprocess.run(["git", "-C", os.path.dirname(BENCH), "cat-file", "-e", bench.BASELINE],
                                 capture_output=True).returncode == 0
    if has_history:
        # The same cases stop the baseline's controller (its service thread ends at the first).
        assert line["baseline_fuzz_failures"] >= 1 and line["baseline_first_failure_case"] is not None, line
    else:
        assert line["baseline_fuzz_failures"] is None and line["baseline_note"], line
