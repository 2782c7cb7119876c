"""Each MicroPython board profile's node boots, stays inside its profile's runtime budget and
runs a real inference workload at the profile's heap (the -X heapsize of its simulated board)."""
import pytest

from edgefleet.boards import catalog
from edgefleet.controller.nodeprobe import NodeProbe

pytestmark = [pytest.mark.e2e, pytest.mark.micropython]

MCU_BOARDS = [p["name"] for p in catalog.all_profiles() if p["runtime"] == "micropython"]
WORKLOAD = [{"id": "dense", "model": "digits_dense", "rate": 10, "input": {"kind": "samples"}}]


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_node_runs_a_workload_within_the_board_heap(board, mosquitto, tmp_path):
    profile = catalog.load(board)
    with NodeProbe(mosquitto, str(tmp_path), "heap-" + board.replace("rpi-", ""), board).start(WORKLOAD) as probe:
        boot = probe.wait_for(lambda p: p.boot_event(), 30)
        assert boot is not None, "no boot event from the node"
        used, total = boot["data"]["heap_used"], boot["data"]["heap_total"]
        print("%s: runtime heap in use after boot %d of %d bytes" % (board, used, total))
        assert total <= profile["heap_bytes"]
        assert used <= profile["runtime_heap_budget_bytes"], (
            "the runtime uses %d bytes after boot, over %s's budget of %d" % (used, board, profile["runtime_heap_budget_bytes"]))
        results = probe.wait_for(lambda p: len(p.of_kind("result")) >= 5 and p.of_kind("result"), 30)
        failures = [e["msg"] for e in probe.of_kind("event") if e["kind"] == "workload_failed"]
        assert results, "no results; workload failures: %s" % failures
        hb = probe.of_kind("hb")[-1]
        assert hb["mem_total"] <= profile["heap_bytes"] and hb["wl"][0]["state"] == "running"
