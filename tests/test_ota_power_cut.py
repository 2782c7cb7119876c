"""Power cuts during updates: a real MicroPython process runs a board's update life on real
flash files (tests/firmware/ota_replay.py: boot through the slot selector, confirm, receive the
next bundle chunk by chunk, switch, reboot) and is SIGKILLed at random moments, over and over
on the same flash. After every kill the boot selector must pick a slot whose every file matches
its manifest's sha256 - whatever the kill interrupted: a file write, the slot wipe, the
verification, the pointer write, the confirmation. With code in ROM (docs/ota.md "Code in ROM"),
the same over a simulated ROM partition (controller/sim/mcu_rom): a kill may also interrupt the
segment's erase or write, and the slot the selector picks must then hold its ROM mark over a
segment that hashes to it."""
import hashlib
import os
import random
import signal
import subprocess
import time

import pytest

from edgefleet.controller.deploy import bundle
from edgefleet.controller.install import keys
from edgefleet.controller.sim.simboard import ROM_SIM_DIR
from edgefleet.firmware import bundle as wire
from edgefleet.firmware import romslot, slots
from edgefleet.firmware.ota import read_floor
from support import interp

pytestmark = pytest.mark.micropython

KEY = bytes(range(32))
KILLS = 60
# The simulated partition's segment (two of them): room for the test's images.
ROM_SEGMENT = 64 * 1024


def _make_bundle(tmp_path, version, seed, rom=False):
    """A ~40 KB MicroPython bundle whose files differ per version; with `rom`, its code is one
    ROM image (romslot.ROM_IMAGE) as a ROM bundle carries it."""
    rng = random.Random(seed)
    slot = tmp_path / ("src-" + version)
    rels = []
    for i in range(12):
        rel = "firmware/m%02d.py" % i if i < 10 else "models/m/model%d.tflite" % i
        if rom and i < 10:
            continue
        path = slot / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1500, 5000))))
        rels.append(rel)
    if rom:
        (slot / romslot.ROM_IMAGE).write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randrange(25000, 40000))))
        rels.append(romslot.ROM_IMAGE)
    profile = {"name": "rpi-pico-w", "runtime": "micropython"}
    manifest = bundle.manifest_for(str(slot), rels, profile, version, seq=seed)
    data = bundle.pack(manifest, str(slot), KEY)
    out = tmp_path / ("bundle-%s.efb" % version)
    out.write_bytes(data)
    return str(out), data


def _flash(tmp_path, first, rom_path=None):
    root = tmp_path / "flash"
    (root / "slot_a").mkdir(parents=True)
    reader = wire.BundleReader(keys.public(KEY), "rpi-pico-w", "micropython", str(root / "slot_a"))
    reader.feed(first)
    reader.finish()
    if rom_path:
        # As `edgefleet flash` leaves a board with a ROM partition: slot_a's image in segment 0,
        # the slot marked, segment 1 erased.
        data = (root / "slot_a" / romslot.ROM_IMAGE).read_bytes()
        with open(rom_path, "wb") as f:
            f.write(data + b"\xff" * (2 * ROM_SEGMENT - len(data)))
        (root / "slot_a" / romslot.ROM_MARK).write_text("%s %d\n" % (hashlib.sha256(data).hexdigest(), len(data)))
    slots.write(str(root), slots.initial("slot_a", "A", "flashed"))
    keys.install_public(str(root), KEY)
    return str(root)


def _check_rom(rom_path, slot_dir, manifest):
    # The slot boots from its segment: its mark names the image its manifest pinned, and the
    # segment holds exactly that image.
    size, digest = wire.slot_entry(slot_dir, romslot.ROM_IMAGE)
    with open(os.path.join(slot_dir, romslot.ROM_MARK)) as f:
        assert f.read().split() == [digest, str(size)]
    index = slots.SLOTS.index(os.path.basename(slot_dir))
    with open(rom_path, "rb") as f:
        f.seek(index * ROM_SEGMENT)
        assert hashlib.sha256(f.read(size)).hexdigest() == digest, "segment %d does not hold %s's image" % (
            index, manifest["version"])


@pytest.mark.parametrize("code_store", ["files", "romfs"])
def test_sigkill_at_random_points_of_ota_always_leaves_a_bootable_verified_slot(tmp_path, micropython, code_store):
    rom = code_store == "romfs"
    rom_path = str(tmp_path / "flash.romparts") if rom else None
    path_a, data_a = _make_bundle(tmp_path, "A", 1, rom)
    path_b, _ = _make_bundle(tmp_path, "B", 2, rom)
    root = _flash(tmp_path, data_a, rom_path)
    # The firmware as .mpy files, as a board loads it (compiling source needs far more heap).
    image = interp.build_mpy_image(str(tmp_path / "mpy"))
    env = dict(os.environ, MICROPYPATH=":".join(interp.firmware_path(image) + [".frozen"]))
    if rom:
        env["MICROPYPATH"] += ":" + ROM_SIM_DIR
        env["EDGEFLEET_SIM_ROM"] = "%s:2:%d" % (rom_path, ROM_SEGMENT)
    rng = random.Random(1234)
    seen_versions, switches, reverted = set(), 0, 0
    for kill in range(KILLS):
        proc = subprocess.Popen([micropython, "-X", "heapsize=96k", os.path.join(interp.FIRMWARE_TESTS, "ota_replay.py"),
                                 root, path_a, path_b], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.03, 0.5))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL, "replay ended by itself: %s %s" % (out[-500:], err[-2000:])
        switches += out.count(b"switched True")
        # The next power-on: the boot selector picks a slot; every file in it must be intact.
        chosen = slots.select(root)
        assert chosen is not None, "kill %d left no readable slot pointer" % kill
        slot_dir, pointer = chosen
        manifest = wire.verify_slot(slot_dir)
        read_floor(root)   # the sequence floor is never torn either (it raises if it is)
        assert manifest["version"] == pointer["ver"][pointer["active"]], (kill, pointer, manifest["version"])
        assert (manifest.get("code") == "romfs") == rom, manifest
        if rom:
            _check_rom(rom_path, slot_dir, manifest)
        seen_versions.add(manifest["version"])
        if pointer.get("reverted"):
            reverted += 1
    # The kills landed all over the cycle: both versions booted, updates completed, and
    # unconfirmed versions were reverted by the selector.
    assert seen_versions == {"A", "B"}, seen_versions
    assert switches >= 5, switches
    assert reverted >= 1, reverted
