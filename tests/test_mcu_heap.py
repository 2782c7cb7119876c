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
        hb = probe.wait_for(lambda p: [h for h in p.of_kind("hb") if h["wl"]] and p.of_kind("hb")[-1], 10)
        assert hb and hb["mem_total"] <= profile["heap_bytes"] and hb["wl"][0]["state"] == "running", hb


def test_engine_and_model_fit_the_allowance_placement_assumes(tmp_path):
    """What the controller reserves for a model on an MCU (placement.model_heap_need) covers
    what loading and running it really takes under MicroPython, from .mpy as on a board."""
    import json
    import os
    import subprocess
    import sys

    from edgefleet import models
    from edgefleet.controller import placement

    sys.path.insert(0, os.path.join(os.path.dirname(__file__)))
    from support import interp

    image_dir = interp.build_mpy_image(str(tmp_path / "image"))
    probe = (
        "import gc, sys\n"
        "gc.collect(); base = gc.mem_alloc()\n"
        "from firmware.engine import load\n"
        "m = load(sys.argv[1])\n"
        "m.invoke(bytes(m.input_size))\n"
        "gc.collect(); print(gc.mem_alloc() - base)\n"
    )
    script = tmp_path / "probe.py"
    script.write_text(probe)
    for name, manifest in models.manifests().items():
        path = os.path.join(models.MODELS_DIR, name, "model.tflite")
        proc = subprocess.run([interp.micropython_binary(), "-X", "heapsize=256k", str(script), path],
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, MICROPYPATH=image_dir + ":.frozen"))
        assert proc.returncode == 0, proc.stderr
        used = int(proc.stdout.split()[-1])
        need = placement.model_heap_need(manifest)
        print("%s: engine + model use %d bytes; placement reserves %d" % (name, used, need))
        assert used <= need, "%s takes %d bytes, placement reserves only %d" % (name, used, need)
