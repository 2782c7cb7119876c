"""Code in ROM (issue 17, docs/ota.md "Code in ROM"): our ROMFS image writer against the real
MicroPython's vfs.VfsRom, and a simulated MCU node booted from a slot's ROM image, with the
heap the harness adds for the image kept out of every figure the node reports."""
import os
import subprocess

import pytest

from edgefleet import models
from edgefleet.boards import catalog
from edgefleet.controller.errors import ConfigError
from edgefleet.controller.extras import micropython_binary
from edgefleet.controller.fleet import placement
from edgefleet.controller.install import image, romfs
from edgefleet.controller.sim import simfleet
from edgefleet.controller.sim.nodeprobe import NodeProbe

MCU_BOARDS = [p["name"] for p in catalog.all_profiles() if p["runtime"] == "micropython"]
# What the ROM image must save the runtime at least, after boot (issue 17's first step).
MIN_SAVING_BYTES = 15 * 1024


def test_varints_round_trip_at_every_width():
    for value in (0, 1, 127, 128, 255, 16383, 16384, 2 ** 21, 2 ** 32 + 5):
        encoded = romfs.encode_uint(value)
        assert romfs.decode_uint(encoded + b"\xff", 0) == (value, len(encoded))
    assert romfs.encode_uint(127) == b"\x7f" and romfs.encode_uint(128) == b"\x81\x00"


def test_images_round_trip_and_are_aligned_to_the_gc_block():
    files = {"firmware/__init__.mpy": b"M\x06", "firmware/engine/ops.mpy": bytes(range(256)) * 3,
             "models/digits/model.bin": b"\x00" * 1000, "top.txt": b"", "a/b/c/d.txt": b"deep"}
    data = romfs.pack(files)
    assert data[:3] == romfs.HEADER
    assert len(data) % romfs.IMAGE_ALIGN == 0
    assert romfs.unpack(data) == files
    assert romfs.pack(dict(reversed(list(files.items())))) == data   # the same files, the same image


def test_bad_images_and_paths_are_refused():
    with pytest.raises(ConfigError, match="not a ROMFS image"):
        romfs.unpack(b"PK\x03\x04")
    with pytest.raises(ConfigError, match="follow its header"):
        romfs.unpack(romfs.HEADER + romfs.encode_uint(500) + b"\x00" * 10)
    with pytest.raises(ConfigError, match="runs through a file"):
        romfs.pack({"a": b"1", "a/b": b"2"})
    with pytest.raises(ConfigError, match="folder too"):
        romfs.pack({"a/b": b"1", "a": b"2"})


def _slot(tmp_path, board="esp32"):
    flash = str(tmp_path / "flash")
    image.write_slot_set(flash, catalog.load(board), simulated=True)
    return os.path.join(flash, image.FIRST_SLOT)


def test_a_slot_image_holds_its_code_and_models_byte_for_byte(tmp_path):
    slot_dir = _slot(tmp_path)
    packed = romfs.unpack(romfs.pack_slot(slot_dir))
    assert "firmware/node.mpy" in packed and "boards/hal_micropython.mpy" in packed
    assert any(p.startswith("models/") for p in packed)
    for rel, data in packed.items():
        with open(os.path.join(slot_dir, rel), "rb") as f:
            assert f.read() == data, rel
    assert "MANIFEST" not in packed   # the slot's manifest stays a file (OTA verifies it there)


MOUNT_AND_IMPORT = """
import gc, os, sys, vfs
with open(sys.argv[1], "rb") as f:
    rom = f.read()
vfs.mount(vfs.VfsRom(rom), "/rom")
sys.path.insert(0, "/rom")
import firmware.protocol as protocol
print(protocol.__file__)
print(protocol.node_topic("ef", "n1", "hb"))
print(sorted(os.listdir("/rom")))
print(len(open("/rom/" + sys.argv[2], "rb").read()))
"""


@pytest.mark.micropython
def test_micropython_mounts_our_image_and_imports_from_it(tmp_path):
    slot_dir = _slot(tmp_path)
    rom = tmp_path / "slot.rom"
    rom.write_bytes(romfs.pack_slot(slot_dir))
    model = next(p for p in romfs.tree_files(slot_dir) if p.startswith("models/"))
    script = tmp_path / "probe.py"
    script.write_text(MOUNT_AND_IMPORT)
    # Run away from the slot, so only the image can supply the modules.
    out = subprocess.run([micropython_binary(), "-X", "heapsize=512k", str(script), str(rom), model],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.split("\n")
    assert lines[0] == "/rom/firmware/protocol.mpy"
    assert lines[1] == "ef/node/n1/hb"
    assert lines[2] == "['boards', 'firmware', 'models']"
    assert int(lines[3]) == os.path.getsize(os.path.join(slot_dir, model))


def _admitted(board, store):
    """The models placement would put on the board with its code in `store`."""
    profile = catalog.load(board)
    node = {"id": "n", "board": board, "runtime": "micropython", "state": "online",
            "caps": {"heap": profile["heap_bytes"], "models": models.names(), "code": store}}
    return [m for m in models.names() if placement.fits({"id": "w", "model": m}, node, profile, models.manifest(m)) is None]


def _boot(mosquitto, tmp_path, board, store, serve=True):
    workloads = [{"id": m.replace("_", "-"), "model": m, "rate": 10, "input": {"kind": "samples"}}
                 for m in _admitted(board, store)] if serve else []
    probe = NodeProbe(mosquitto, str(tmp_path / store), "rom-%s-%s" % (store, board.replace("rpi-", "")), board,
                      code_store=store)
    with probe.start(workloads):
        if serve:
            boot = probe.wait_for(lambda p: p.boot_event(), 30)
            assert boot is not None, "no boot event from the %s node" % store
            boot = boot["data"]
        else:
            # Its link may never come up for lack of heap: the boot line on its console says it.
            boot = probe.console_boot_heap(30)
            assert boot is not None, "no boot line from the %s node" % store
        hb = None
        if serve:
            def every_workload_served(p):
                served = [r["wl"] for r in p.of_kind("result")]
                return all(served.count(w["id"]) >= 5 for w in workloads)

            served = probe.wait_for(every_workload_served, 30)
            failures = [e["msg"] for e in probe.of_kind("event") if e["kind"] == "workload_failed"]
            assert served and not failures, "%s node: results %d, failures %s" % (
                store, len(probe.of_kind("result")), failures)
            hb = probe.wait_for(lambda p: [h for h in p.of_kind("hb") if len(h["wl"]) == len(workloads)]
                                and p.of_kind("hb")[-1], 10)
            assert hb and all(w["state"] == "running" for w in hb["wl"]), hb
        flash = probe.fleet.flash_dir(probe.node_id)
        hal_options = image.read_config(flash)["hal_options"]
        console = probe.board.console.since(0).decode(errors="replace")
        return boot, hb, probe.board.heap_bytes, hal_options, flash, console


@pytest.mark.e2e
@pytest.mark.micropython
@pytest.mark.parametrize("board", MCU_BOARDS)
def test_a_node_boots_from_its_rom_segment_with_honest_heap_figures(board, mosquitto, tmp_path):
    profile = catalog.load(board)
    assert _admitted("rpi-pico-w", "files"), "no board left that serves a model: this test would prove less"
    # From files, the ESP32's heap holds the runtime and nothing more: its boot figures only.
    files_boot, _, files_heapsize, files_options, _, files_console = _boot(
        mosquitto, tmp_path, board, "files", serve=profile.get("code_store") != "romfs")
    rom_boot, rom_hb, heapsize, options, flash, console = _boot(mosquitto, tmp_path, board, "romfs")

    segment_bytes = profile["rom"]["segment_bytes"]
    partition_bytes = profile["rom"]["segments"] * segment_bytes
    assert "romboot: ROM segment 0 (%d bytes) mounted at /rom" % segment_bytes in console, console[-2000:]
    assert "romboot" not in files_console
    assert options["rom_image_bytes"] == partition_bytes
    assert "rom_image_bytes" not in files_options
    # The interpreter got the board's heap, the simulation layer's and exactly the partition's
    # (the simulated board copies the partition it maps onto its heap) ...
    assert heapsize == profile["heap_bytes"] + options["sim_layer_bytes"] + partition_bytes
    assert files_heapsize == profile["heap_bytes"] + files_options["sim_layer_bytes"]
    # ... and the node reports the board's heap alone, in its boot event and its heartbeats.
    assert rom_boot["heap_total"] <= profile["heap_bytes"]
    assert rom_hb["mem_total"] <= profile["heap_bytes"]
    # The segment is out of the total and nothing more: the totals differ only by the GC's own
    # tables for those bytes (a block bitmap the unix port keeps per 16 bytes of heap; a board
    # mapping the segment from flash has none) and by the partition's simulated driver, both
    # of which leave the ROM node a little less.
    gc_tables = files_boot["heap_total"] - rom_boot["heap_total"]
    assert 0 <= gc_tables <= partition_bytes // 16, (files_boot, rom_boot, partition_bytes)
    saving = files_boot["heap_used"] - rom_boot["heap_used"]
    digest, size = open(os.path.join(flash, image.FIRST_SLOT, "ROM")).read().split()
    with open(flash.rstrip("/") + ".romparts", "rb") as f:
        rom_image = f.read(int(size))
    print("%s: runtime heap after boot %d of %d bytes from files, %d of %d from a %d-byte ROM image (%d less)" % (
        board, files_boot["heap_used"], files_boot["heap_total"], rom_boot["heap_used"], rom_boot["heap_total"],
        len(rom_image), saving))
    assert saving >= MIN_SAVING_BYTES, "code in ROM saves only %d bytes after boot" % saving
    # Saving more than the code the image holds would mean the image's heap went uncounted.
    code_bytes = sum(len(d) for p, d in romfs.unpack(rom_image).items())
    assert saving < code_bytes, (saving, code_bytes)


def test_code_stores_are_known_and_unknown_ones_are_refused(tmp_path):
    for board in MCU_BOARDS:
        profile = catalog.load(board)
        assert profile.get("code_store", "files") in simfleet.CODE_STORES
        if profile.get("code_store") == "romfs":
            assert profile["rom"]["segments"] >= 2, "A/B slots need a ROM segment each"
    with pytest.raises(ConfigError, match="code store"):
        simfleet.SimFleet(str(tmp_path), "127.0.0.1", 1883, [], code_store="flash")
    fleet = simfleet.SimFleet(str(tmp_path), "127.0.0.1", 1883, [], code_store="romfs", slotted=False)
    with pytest.raises(ConfigError, match="A/B slot"):
        fleet.board_code_store(catalog.load("esp32"))


def test_the_sim_hal_reports_the_heap_without_the_layer_and_the_image():
    from edgefleet.boards import open_hal
    profile = catalog.load("esp32")
    plain = open_hal("sim", profile, {"base": "mock", "sim_file": "absent.json"})
    rom = open_hal("sim", profile, {"base": "mock", "sim_file": "absent.json", "sim_layer_bytes": 3000,
                                    "rom_image_bytes": 160000})
    assert rom.mem() == (plain.mem()[0], plain.mem()[1] - 3000 - 160000)


def test_a_rom_slot_image_carries_its_models_tflite_so_they_switch_with_the_code(tmp_path):
    """romdeploy.slot_image (flash, bundles, the simulated fleets): the code and each model's
    .tflite, read in place by the engine; samples, labels and manifests stay files only."""
    from edgefleet.controller.install import romdeploy
    slot_dir = _slot(tmp_path)
    packed = romfs.unpack(romdeploy.slot_image(slot_dir))
    for name in models.names():
        assert packed["models/%s/model.tflite" % name] == (tmp_path / "flash" / image.FIRST_SLOT / "models" / name
                                                          / "model.tflite").read_bytes()
    assert not [p for p in packed if p.startswith("models/") and not p.endswith("/model.tflite")]
    assert "firmware/node.mpy" in packed
    # A microcontroller's image leaves out what only a Linux node runs, and what it never imports.
    assert "firmware/procworker.mpy" not in packed and "firmware/tflite_backend.mpy" not in packed
    assert "firmware/engine/model.mpy" not in packed and "firmware/romboot.mpy" not in packed


@pytest.mark.parametrize("arch,simulated,in_rom", [
    ("xtensawin", False, ["digits_conv", "digits_dense"]),   # a real ESP32: both models read in place
    ("x64", True, ["digits_dense"]),   # the simulated one: x64 native code and the simulation's HAL
])
def test_the_esp32_rom_segment_holds_the_code_and_its_models(arch, simulated, in_rom, tmp_path):
    """The ESP32's slot image in one 128 KB segment: code grown by ~1 KB more would push
    digits_dense's .tflite out of the simulated board's ROM, and its weights into the heap."""
    from edgefleet.controller.install import romdeploy
    profile = catalog.load("esp32")
    image.write_slot_set(str(tmp_path), profile, mpy_arch=arch, simulated=simulated)
    data = romdeploy.slot_image(str(tmp_path / image.FIRST_SLOT), profile["rom"]["segment_bytes"])
    assert sorted(p.split("/")[1] for p in romfs.unpack(data) if p.startswith("models/")) == in_rom, len(data)


def test_a_segment_too_small_for_every_model_takes_the_code_and_the_smallest_models(tmp_path):
    from edgefleet.controller.install import romdeploy
    slot_dir = _slot(tmp_path)
    code_only = len(romdeploy.slot_image(slot_dir, room=0))
    sizes = sorted((os.path.getsize(os.path.join(models.model_dir(n), "model.tflite")), n) for n in models.names())
    smallest = sizes[0][1]
    packed = romfs.unpack(romdeploy.slot_image(slot_dir, room=code_only + sizes[0][0] + 512))
    assert [p for p in packed if p.startswith("models/")] == ["models/%s/model.tflite" % smallest]
    assert not [p for p in romfs.unpack(romdeploy.slot_image(slot_dir, room=0)) if p.startswith("models/")]


ENGINE_IN_PLACE = """
import gc, json, sys, vfs
with open(sys.argv[1], "rb") as f:
    rom = f.read()
vfs.mount(vfs.VfsRom(rom), "/rom")
sys.path.insert(0, "/rom")
from firmware.engine import load
held = {}
for where in ("file", "rom"):
    path = (sys.argv[2] if where == "file" else "/rom/models/m/model.tflite")
    interp = load(path)   # a warm-up: interned names stay, so the second load measures the model
    interp = None
    gc.collect()
    before = gc.mem_alloc()
    interp = load(path)
    gc.collect()
    held[where] = gc.mem_alloc() - before
    out = [list(interp.invoke(bytes((v + 256) % 256 for v in vec["input"]))) for vec in json.load(open(sys.argv[3]))["vectors"][:5]]
    print(where, held[where], json.dumps(out))
"""


@pytest.mark.micropython
@pytest.mark.parametrize("name", ["digits_dense", "digits_conv"])
def test_the_engine_reads_a_model_in_rom_in_place(tmp_path, name):
    """A .tflite in a ROMFS image is a zero-copy memoryview: the engine uses its filters where they
    lie (a loaded model holds at least their bytes less heap than one read from a file) and
    computes tflite-micro's outputs."""
    from edgefleet.controller import modelcheck
    tree = modelcheck.compile_engine(str(tmp_path / "image"))
    folder = models.model_dir(name)
    files = romfs.tree_files(tree, dirs=("firmware",))
    files["models/m/model.tflite"] = open(os.path.join(folder, "model.tflite"), "rb").read()
    rom = tmp_path / "engine.rom"
    rom.write_bytes(romfs.pack(files))
    script = tmp_path / "probe.py"
    script.write_text(ENGINE_IN_PLACE)
    out = subprocess.run([micropython_binary(), "-X", "heapsize=512k", str(script), str(rom),
                          os.path.join(folder, "model.tflite"), os.path.join(folder, "vectors.json")],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().split("\n"))
    held = {k: int(v.split(" ", 1)[0]) for k, v in lines.items()}
    outputs = {k: v.split(" ", 1)[1] for k, v in lines.items()}
    import json
    with open(os.path.join(folder, "vectors.json")) as f:
        want = [[v % 256 for v in vec["output"]] for vec in json.load(f)["vectors"][:5]]
    assert json.loads(outputs["rom"]) == want and json.loads(outputs["file"]) == want
    m = modelcheck.parse(open(os.path.join(folder, "model.tflite"), "rb").read())
    filter_bytes = sum(m.graph.sizes[inputs[1]] for code, inputs, _, _ in m.graph.ops
                       if code in modelcheck.FILTERED)
    print("%s: held from file %d, in place from ROM %d, filters %d bytes" % (name, held["file"], held["rom"], filter_bytes))
    assert held["file"] - held["rom"] >= filter_bytes, held
