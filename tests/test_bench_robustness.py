"""The robustness benchmark (tools/bench/robustness.py) at small scale: seeded hostile messages
and the issue's attack corpus, against this controller and the one before issue 15."""
import subprocess

import pytest

from support.bench import BENCH_DIR, load_bench





@pytest.mark.e2e
def test_no_hostile_message_stops_the_controller_while_the_baseline_falls(mosquitto):
    bench = load_bench("robustness")
    line = bench.main(["--cases", "400", "--skip-signing"])
    assert line["fuzz_failures"] == 0 and line["fuzz_lease_every_tick"], line
    assert line["controller_alive"] and line["corpus_cases"] == 27
    has_history = subprocess.run(["git", "-C", BENCH_DIR, "cat-file", "-e", bench.BASELINE],
                                 capture_output=True).returncode == 0
    if has_history:
        # The same cases stop the baseline's controller (its service thread ends at the first).
        assert line["baseline_fuzz_failures"] >= 1 and line["baseline_first_failure_case"] is not None, line
    else:
        assert line["baseline_fuzz_failures"] is None and line["baseline_note"], line
