"""Updates with code in ROM (issue 17, docs/ota.md "Code in ROM"): a simulated ESP32 whose
profile runs its code in place from a ROM partition (controller/sim/mcu_rom) takes a ROM bundle
into its other segment and boots it from there; a ROM bundle whose code cannot boot reverts by
itself to the segment it came from; a board without a ROM partition refuses a ROM bundle and
keeps running. Real MicroPython nodes, a real mosquitto, rollouts over MQTT."""
import json
import os

import pytest

from edgefleet.controller.deploy import bundle
from edgefleet.controller.install import romfs
from edgefleet.controller.sim.simfleet import SimFleet
from edgefleet.firmware import romslot
from support.rollouts import run_rollout
from support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.micropython]

KEY = bytes(range(32))
LAYOUT = [("rom-esp32", "esp32"), ("files-pico", "rpi-pico-w")]


class Fleet:
    def __init__(self, broker, root):
        self.broker = broker
        self.sim = SimFleet(root, broker.host, broker.port, LAYOUT, keepalive=2, slotted=True, key=KEY,
                            config={"ota_abandon_ms": 15000})

    def pointer(self, node):
        with open(os.path.join(self.sim.flash_dir(node), "slots.json")) as f:
            return json.load(f)

    def console(self, node):
        return self.sim.board(node).console.since(0).decode(errors="replace")

    def deploy(self, data, nodes, version):
        return run_rollout(self.broker, data, nodes, version)


@pytest.fixture(scope="module")
def fleet(mosquitto, tmp_path_factory):
    f = Fleet(mosquitto, str(tmp_path_factory.mktemp("romota")))
    f.sim.start()
    try:
        wait_until(lambda: all("heap in use" in f.console(n) for n, _ in LAYOUT), 60, "both boards booted")
        yield f
    finally:
        f.sim.stop()


def test_a_rom_bundle_goes_into_the_other_segment_and_boots_from_there(fleet):
    assert "romboot: ROM segment 0 (131072 bytes) mounted at /rom" in fleet.console("rom-esp32")
    data = bundle.build("esp32", "0.2.0", KEY, models=["digits_dense"], mpy_arch="x64", simulated=True, seq=10)
    assert bundle.inspect(data, KEY)["manifest"]["code"] == "romfs"
    rollout = fleet.deploy(data, ["rom-esp32"], "0.2.0")
    assert rollout.status == "done", (rollout.error, rollout.log)
    pointer = fleet.pointer("rom-esp32")
    assert pointer["active"] == "slot_b" and pointer["ver"]["slot_b"] == "0.2.0" and not pointer["tentative"], pointer
    slot_b = os.path.join(fleet.sim.flash_dir("rom-esp32"), "slot_b")
    # The code is in segment 1 (and the image file it came in); none of it as .mpy files.
    assert sorted(os.listdir(slot_b)) == ["MANIFEST", romslot.ROM_MARK, "models", romslot.ROM_IMAGE]
    wait_until(lambda: "romboot: ROM segment 1 (131072 bytes) mounted at /rom" in fleet.console("rom-esp32"), 20,
               "slot_b's segment mounted")
    with open(os.path.join(slot_b, romslot.ROM_MARK)) as f:
        digest, size = f.read().split()
    with open(fleet.sim.board("rom-esp32").rom_path, "rb") as f:
        f.seek(fleet.sim.board("rom-esp32").rom_segment_bytes)
        image = f.read(int(size))
    assert "firmware/node.mpy" in romfs.unpack(image)


def test_a_rom_bundle_that_cannot_boot_reverts_to_the_segment_it_came_from(fleet, tmp_path):
    # Signed and whole, but its code cannot start: every tentative boot fails, and the boot
    # selector goes back to slot_b (segment 1) once the tries are used up.
    slot = tmp_path / "broken"
    (slot / "models").mkdir(parents=True)
    (slot / "models" / "README").write_text("no models\n")
    (slot / romslot.ROM_IMAGE).write_bytes(romfs.pack({"firmware/__init__.py": b"VERSION = 'broken'\n"}))
    manifest = bundle.manifest_for(str(slot), ["models/README", romslot.ROM_IMAGE], {"name": "esp32", "runtime": "micropython"},
                                   "0.3.0-broken", mpy_arch="x64", seq=11)
    data = bundle.pack(manifest, str(slot), KEY)
    before = fleet.console("rom-esp32").count("romboot: ROM segment 1")
    rollout = fleet.deploy(data, ["rom-esp32"], "0.3.0-broken")
    assert rollout.status != "done", rollout.log
    wait_until(lambda: "ota_reverted: version 0.3.0-broken reverted" in fleet.console("rom-esp32"), 90,
               "the selector's revert")
    pointer = fleet.pointer("rom-esp32")
    assert pointer["active"] == "slot_b" and not pointer["tentative"], pointer
    console = fleet.console("rom-esp32")
    assert console.count("romboot: ROM segment 1") > before
    # The tentative slot was tried from its own segment, and failed there.
    assert console.count("ImportError: no module named 'boards'") >= 3, console[-3000:]


def test_a_board_without_a_rom_partition_refuses_a_rom_bundle_and_keeps_running(fleet):
    data = bundle.build("rpi-pico-w", "0.2.0", KEY, models=["digits_dense"], mpy_arch="x64", simulated=True, seq=12,
                        code_store="romfs")
    rollout = fleet.deploy(data, ["files-pico"], "0.2.0")
    assert rollout.status != "done"
    assert "no vfs.rom_ioctl" in json.dumps(rollout.log) + str(rollout.error), (rollout.error, rollout.log)
    pointer = fleet.pointer("files-pico")
    assert pointer["active"] == "slot_a" and not pointer.get("tentative"), pointer
    assert not os.path.exists(os.path.join(fleet.sim.flash_dir("files-pico"), "slot_b", "MANIFEST"))
