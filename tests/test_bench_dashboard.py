"""The dashboard benchmark (tools/bench/dashboard.py) as a test: 50 nodes heartbeating once a
second against the controller and its dashboard, the fleet page open in headless Chromium. The
dashboard must keep each heartbeat under 500 ms from the broker to the page's DOM (p99) and
cost under 10% of one core (its web server's threads plus its hooks in the controller's
thread), the figures docs/dashboard.md states."""
import json
import subprocess
import sys

import pytest

from support.bench import BENCH_DIR

pytestmark = pytest.mark.e2e
KEYS = {"nodes", "update_latency_p99_ms", "server_cpu_pct", "page_weight_kb", "history_bytes_per_node_day"}
CPU_SHARE_PCT = 10.0
LATENCY_P99_MS = 500.0


def test_fifty_nodes_on_the_page_within_the_latency_and_cpu_targets():
    proc = subprocess.run([sys.executable, BENCH_DIR + "/dashboard.py", "--nodes", "50", "--duration", "8"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert KEYS <= set(result)
    assert result["nodes"] == 50
    # Every heartbeat sent within the window (its edges aside) reached the page.
    assert result["updates_missed"] == 0, result
    assert result["updates_seen"] >= 0.8 * 50 * 8, result
    assert result["update_latency_p99_ms"] < LATENCY_P99_MS, result
    assert 0 < result["server_cpu_pct"] < CPU_SHARE_PCT, result
    assert 0 < result["page_weight_kb"] < 100, result
    assert result["history_bytes_per_node_day"] < 64 * (8640 + 288), result
