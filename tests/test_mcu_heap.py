"""MicroPython nodes at their board profile's heap (the -X heapsize of the simulated board):
the runtime stays inside the budget its profile records, every model the controller would
place on the board really runs there, and a model the board cannot hold is refused by
placement with the numbers, while the node itself keeps running."""
import os
import subprocess
import sys
import time

import pytest

from edgefleet import models
from edgefleet.boards import catalog
from edgefleet.controller.extras import micropython_binary, micropython_build
from edgefleet.controller.fleet import placement
from edgefleet.controller.sim.nodeprobe import NodeProbe

pytestmark = [pytest.mark.e2e, pytest.mark.micropython]

MCU_BOARDS = [p["name"] for p in catalog.all_profiles() if p["runtime"] == "micropython"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rom(profile):
    # The board as the CLI and the simulated fleets set it up: its profile's code store.
    return profile.get("code_store") == "romfs"


def _word():
    # The simulated boards' word size: 64 on the venv's MicroPython, 32 on a 32-bit build
    # ($EDGEFLEET_MICROPYTHON, tools/micropython32/build.sh), where the budgets under test
    # are the profiles' "word_32" ones.
    return micropython_build(micropython_binary())[1]


def _budget(profile):
    return placement.runtime_budget(profile, _rom(profile), _word())


def _placeable(board, model):
    profile = catalog.load(board)
    node = {"id": "n", "board": board, "runtime": "micropython", "state": "online",
            "caps": {"heap": profile["heap_bytes"], "models": [model], "code": "romfs" if _rom(profile) else "files",
                     "word": _word()}}
    return placement.fits({"id": "w", "model": model}, node, profile, models.manifest(model))


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_runtime_stays_within_the_board_budget_and_serves_what_placement_admits(board, mosquitto, tmp_path):
    profile = catalog.load(board)
    admitted = [m for m in models.names() if _placeable(board, m) is None]
    workloads = [{"id": m.replace("_", "-"), "model": m, "rate": 10, "input": {"kind": "samples"}} for m in admitted]
    with NodeProbe(mosquitto, str(tmp_path), "heap-" + board.replace("rpi-", ""), board).start(workloads) as probe:
        boot = probe.wait_for(lambda p: p.boot_event(), 30)
        assert boot is not None, "no boot event from the node"
        used, total = boot["data"]["heap_used"], boot["data"]["heap_total"]
        print("%s: runtime heap in use after boot %d of %d bytes; serves %s" % (board, used, total, admitted))
        assert total <= profile["heap_bytes"]
        budget = _budget(profile)
        assert used <= budget, "the runtime uses %d bytes after boot, over %s's budget of %d" % (used, board, budget)
        # The node says its word size, which picks the figures placement holds it to.
        hello = probe.wait_for(lambda p: p.of_kind("hello"), 10)
        assert hello and hello[-1]["caps"]["word"] == _word(), hello

        def every_workload_served(p):
            served = {}
            for r in p.of_kind("result"):
                served[r["wl"]] = served.get(r["wl"], 0) + 1
            return all(served.get(w["id"], 0) >= 5 for w in workloads)

        ok = probe.wait_for(every_workload_served, 30)
        failures = [e["msg"] for e in probe.of_kind("event") if e["kind"] == "workload_failed"]
        assert ok and not failures, "workloads %s: failures %s" % ([w["id"] for w in workloads], failures)
        hb = probe.wait_for(lambda p: [h for h in p.of_kind("hb") if len(h["wl"]) == len(workloads)]
                            and p.of_kind("hb")[-1], 10)
        assert hb and hb["mem_total"] <= profile["heap_bytes"]
        assert all(w["state"] == "running" for w in hb["wl"]), hb["wl"]


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_models_a_board_cannot_hold_are_refused_with_the_numbers(board):
    for model in models.names():
        why = _placeable(board, model)
        profile = catalog.load(board)
        need = placement.model_heap_need(models.manifest(model), _rom(profile), _word())
        room = profile["heap_bytes"] - _budget(profile)
        if need > room:
            assert why is not None and str(need) in why and str(room) in why, why
        else:
            assert why is None, why


def test_manifests_record_the_heap_each_model_really_needs():
    """mcu_heap_bytes, which placement trusts, is re-measured under MicroPython and must match."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "models", "measure_mcu_heap.py"), "--check"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_esp32_runtime_peak_stays_within_its_budget_through_commands_and_a_broker_outage(tmp_path):
    """The heartbeats' mem_low is the runtime's low-water mark (garbage included): through a burst
    of commands and a broker outage with its reconnect, the ESP32 node in ROM never needs more
    heap than its profile's budget, which placement reserves for it."""
    from edgefleet.controller.broker import MosquittoBroker
    profile = catalog.load("esp32")
    budget = _budget(profile)
    broker = MosquittoBroker().start()
    try:
        with NodeProbe(broker, str(tmp_path), "fire-esp32", "esp32", keepalive=2).start([]) as probe:
            assert probe.wait_for(lambda p: len(p.of_kind("hb")) >= 3, 30), "no heartbeats"
            replies = [probe.command("info", timeout=10) for _ in range(20)]
            assert all(r and r["ok"] for r in replies), replies
            port = broker.port
            broker.stop()
            time.sleep(3)
            broker = MosquittoBroker(port=port).start()
            seen = len(probe.of_kind("hb"))
            assert probe.wait_for(lambda p: len(p.of_kind("hb")) >= seen + 3, 40), "no heartbeats after the outage"
            assert probe.board.console.since(0).count(b"edgefleet-node: connected to") >= 2   # it reconnected
            peaks = [h["mem_total"] - h["mem_low"] for h in probe.of_kind("hb") if "mem_low" in h]
            print("esp32 runtime peak %d of budget %d over %d heartbeats" % (max(peaks), budget, len(peaks)))
            assert peaks and max(peaks) <= budget, (max(peaks), budget)
    finally:
        broker.stop()


def _full_outbox(directory, profile, boot=1, spare_segments=0):
    """Segment files of an outbox filled to the profile's capacity (less spare_segments) with
    results of an earlier boot, as a long outage leaves it (firmware/outbox.py's own record
    format); ({path on the board's flash: file} for the image, the number of results)."""
    from edgefleet.firmware import outbox, protocol
    box = profile["outbox"]
    os.makedirs(directory, exist_ok=True)
    files, seq = {}, 0
    for segment in range(1, box["capacity_bytes"] // box["segment_bytes"] + 1 - spare_segments):
        data = b""
        while True:
            seq += 1
            payload = protocol.encode("result", {"v": 1, "node": "fire-esp32", "boot": boot, "seq": seq, "wl": "w",
                                                 "up": seq * 100, "label": seq % 10, "score": 0.5, "us": 900}).encode()
            record = outbox.encode_record("result", boot, seq, payload)
            if len(data) + len(record) > box["segment_bytes"]:
                seq -= 1
                break
            data += record
        path = os.path.join(directory, "%08d.seg" % segment)
        with open(path, "wb") as f:
            f.write(data)
        files["data/outbox/%08d.seg" % segment] = path
    return files, seq


def test_the_esp32_runtime_peak_stays_within_its_budget_with_a_full_outbox_commands_an_outage_and_an_update(tmp_path):
    """The heap under fire: the ESP32 node in ROM boots with its outbox full (the results of a
    long outage), delivers them, answers a burst of commands meanwhile, rides out a broker
    outage that rewinds its delivery, and takes a ROM update (in the 512-byte chunks its
    profile asks for) while the outbox still delivers; through all of it the heartbeats'
    low-water mark stays within what placement reserves: the runtime's budget, plus the model
    placement admits beside it, which infers throughout (at this interpreter's word size: none
    on the 64-bit one, digits_conv on a 32-bit build); and every result of the outage is still
    in the outbox after the update's reboot."""
    from edgefleet.controller.broker import MosquittoBroker
    from edgefleet.controller.deploy import bundle
    from edgefleet.controller.deploy.rollout import Gate
    from edgefleet.controller.install import image
    from support.rollouts import run_rollout
    profile = catalog.load("esp32")
    budget = _budget(profile)
    needs = {m: placement.model_heap_need(models.manifest(m), True, _word()) for m in models.names()
             if _placeable("esp32", m) is None}
    model = max(needs, key=needs.get) if needs else None
    # The workload's results go to the outbox too: two segments are left for them (~150 results).
    extra, records = _full_outbox(str(tmp_path / "outbox"), profile, spare_segments=2 if model else 0)
    workloads = [{"id": "m", "model": model, "rate": 1, "input": {"kind": "samples"}}] if model else []
    key = bytes(range(32))
    broker = MosquittoBroker().start()
    try:
        probe = NodeProbe(broker, str(tmp_path / "fleet"), "fire-esp32", "esp32", keepalive=2, extra_files=extra,
                          key=key)
        with probe.start(workloads):
            # Delivering (~30 results/s on this simulated board) goes on behind all that follows.
            assert probe.wait_for(lambda p: len(p.of_kind("result")) >= 300, 60), \
                "%d of %d results delivered" % (len(probe.of_kind("result")), records)
            replies = [probe.command("info", timeout=10) for _ in range(20)]
            assert all(r and r["ok"] for r in replies), replies
            delivered, beats = len(probe.of_kind("result")), len(probe.of_kind("hb"))
            port = broker.port
            broker.stop()
            time.sleep(3)
            broker = MosquittoBroker(port=port).start()
            # Unacknowledged, the outbox goes out again from its oldest record: at the node's
            # reconnect, which may come before the probe's and go unseen, and again when a
            # controller says it is up (as one coming back would), which the probe does once it
            # watches again.
            probe.announce_controller()
            assert probe.wait_for(lambda p: len(p.of_kind("result")) >= delivered + 300, 60), \
                "%d results and %d heartbeats since the outage (the last: %s):\n%s" % (
                    len(probe.of_kind("result")) - delivered, len(probe.of_kind("hb")) - beats,
                    probe.of_kind("hb")[-1], probe.board.console.since(0)[-2000:].decode(errors="replace"))
            data = bundle.build("esp32", "0.2.0", key, models=[model or "digits_dense"], mpy_arch=image.SIM_MPY_ARCH,
                                simulated=True, seq=10)
            rollout = run_rollout(broker, data, [probe.node_id], "0.2.0", gate=Gate(soak_s=1.0, min_results=0),
                                  wave_timeout_s=120)
            assert rollout.status == "done", (rollout.error, probe.board.console.since(0)[-2000:])
            seen = len(probe.of_kind("hb"))
            assert probe.wait_for(lambda p: len(p.of_kind("hb")) >= seen + 3, 30)
            hbs = probe.of_kind("hb")
            box = hbs[-1]["outbox"]
            assert box["oldest"] == [1, 1] and box["records"] >= records and not box["dropped"], box
            assert hbs[-1]["state"] == "online", hbs[-1]
            reserved = budget + needs.get(model, 0)
            peaks = [h["mem_total"] - h["mem_low"] for h in hbs if "mem_low" in h]
            print("esp32 peaks %s of %d reserved (runtime %d, %s), %d results in the outbox"
                  % (peaks, reserved, budget, "%s %d" % (model, needs[model]) if model else "no model", records))
            assert max(peaks) <= reserved, (peaks, reserved)
            if model:
                # It inferred before the update and after it, and never failed.
                assert [w["state"] for w in hbs[-1]["wl"]] == ["running"] and hbs[-1]["wl"][0]["n"] > 0, hbs[-1]["wl"]
                crashes = [e for e in probe.of_kind("event") if e["kind"] in ("crash", "workload_failed", "degraded")]
                assert not crashes, crashes
    finally:
        broker.stop()
