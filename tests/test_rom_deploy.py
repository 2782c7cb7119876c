"""`edgefleet flash --code-store romfs`: the slot's ROM image deployed into a simulated board's
ROM partition (controller/sim/mcu_rom: vfs.rom_ioctl over a file beside the flash folder, with
flash's erase/program rules) over the raw REPL, the node booting from it (issue 17, step 2;
docs/ota.md "Code in ROM"); a deploy cut off midway; the files fallback; mpremote's view of it."""
import hashlib
import json
import os
import re
import subprocess
import sys
import threading

import paho.mqtt.client as mqtt
import pytest

from edgefleet.boards import catalog
from edgefleet.controller import cli
from edgefleet.controller.errors import FlashError
from edgefleet.controller.install import flasher, romdeploy, romfs
from edgefleet.controller.install.serialrepl import ReplLink
from edgefleet.controller.sim.simboard import McuBoard, sim_machine
from edgefleet.controller.sim.simfleet import simulated_heap_bytes
from support.waiting import wait_until

BOARD = "rpi-pico-w"
PROFILE = catalog.load(BOARD)
SEGMENT = 256 * 1024
MODEL = "digits_dense"
MIN_SAVING_BYTES = 15 * 1024
HEAP_LINE = re.compile(rb"edgefleet-node: (\S+) \(.*heap in use (\d+) of (\d+)")

# How long the flashes that meet a cut wait for a silent board (the flasher's timeout).
CUT_TIMEOUT_S = 8


@pytest.fixture
def fleet_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))


@pytest.fixture
def make_board(tmp_path):
    boards = []

    def make(name, rom_segments=0, rom_segment_bytes=SEGMENT, profile=PROFILE):
        flash = tmp_path / name
        flash.mkdir()
        heap = simulated_heap_bytes(profile) + rom_segments * rom_segment_bytes
        board = McuBoard(name, str(flash), heap, console_log=str(tmp_path / (name + ".log")),
                         machine=sim_machine(profile), rom_segments=rom_segments, rom_segment_bytes=rom_segment_bytes)
        boards.append(board)
        board.start()
        assert board.wait_console(b">>> ", timeout=10), board.console.since(0)
        return board

    yield make
    for board in boards:
        board.stop()


def flash_cli(capsys, *argv):
    code = cli.main(["flash"] + list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def heap_after_boot(board, position=0, timeout=20):
    """(heap in use, heap total) the node printed at its boot after console position."""
    assert board.wait_console(b"heap in use", position, timeout), board.console.since(position)[-2000:]
    match = HEAP_LINE.search(board.console.since(position))
    return int(match.group(2)), int(match.group(3))


def segment(board, index):
    with open(board.rom_path, "rb") as f:
        f.seek(index * board.rom_segment_bytes)
        return f.read(board.rom_segment_bytes)


class Results:
    """Results the nodes publish on the broker, per node."""

    def __init__(self, broker):
        self.count = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rom-deploy-observer")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("ef/node/+/result", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        node = message.topic.split("/")[2]
        with self._lock:
            self.count[node] = self.count.get(node, 0) + 1

    def assign(self, node, spec):
        self.client.publish("ef/node/%s/assign" % node, json.dumps({"v": 1, "epoch": 1, "wl": [spec]}), qos=1,
                            retain=True).wait_for_publish(5)

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.e2e
@pytest.mark.micropython
def test_flash_deploys_the_rom_image_and_the_node_boots_from_it(make_board, mosquitto, fleet_home, capsys):
    """Two empty boards flashed through the CLI with --code-store romfs: one with a ROM
    partition gets its code into segment 0, the other (no partition) as files, saying why.
    Both serve a workload; the ROM node's heap after boot is lower by at least 15 KB."""
    broker = "%s:%d" % (mosquitto.host, mosquitto.port)
    results = Results(mosquitto)
    try:
        files_board = make_board("files-node")
        code, out, err = flash_cli(capsys, files_board.serial_url, "--board", BOARD, "--node", "files-node",
                                   "--broker", broker, "--model", MODEL, "--code-store", "romfs")
        assert code == 0, err
        assert "code store romfs, but this MicroPython has no vfs.rom_ioctl: the code goes as .mpy files" in out
        assert os.path.exists(os.path.join(files_board.flash_dir, "slot_a", "firmware", "node.mpy"))

        rom_board = make_board("rom-node", rom_segments=2)
        code, out, err = flash_cli(capsys, rom_board.serial_url, "--board", BOARD, "--node", "rom-node",
                                   "--broker", broker, "--model", MODEL, "--code-store", "romfs")
        assert code == 0, err
        assert "code in ROM segment 0 (slot_a)" in out, out
        assert "wrote ROM segment 0 (slot_a)" in err
        flash = rom_board.flash_dir
        # The segment holds the slot's image, erased (all ones) after it; the slot holds no code.
        mark = open(os.path.join(flash, "slot_a", romdeploy.ROM_MARK)).read().split()
        seg0 = segment(rom_board, 0)
        image = seg0[:int(mark[1])]
        assert romfs.unpack(image)["firmware/node.mpy"]
        assert seg0[len(image):].strip(b"\xff") == b""
        assert segment(rom_board, 1) == b"\xff" * SEGMENT
        assert not os.path.exists(os.path.join(flash, "slot_a", "firmware"))
        assert os.path.exists(os.path.join(flash, "slot_a", "models", MODEL))   # models stay files
        assert json.load(open(os.path.join(flash, "slots.json")))["active"] == "slot_a"

        assert rom_board.wait_console(b"romboot: ROM segment 0 (%d bytes) mounted at /rom" % SEGMENT, 0, 20), \
            rom_board.console.since(0)[-2000:]
        assert b"romboot" not in files_board.console.since(0)
        rom_used, rom_total = heap_after_boot(rom_board)
        files_used, files_total = heap_after_boot(files_board)
        # The node counts the board's heap alone, not the partition the simulated board copies
        # onto its heap: the totals differ only by the GC's tables for the partition's bytes.
        assert 0 <= files_total - rom_total <= 2 * SEGMENT // 16, (files_total, rom_total)
        print("heap in use after boot: %d from files, %d from ROM (%d less)" % (files_used, rom_used,
                                                                               files_used - rom_used))
        assert files_used - rom_used >= MIN_SAVING_BYTES, (files_used, rom_used)

        spec = {"id": "digits", "model": MODEL, "rate": 10, "input": {"kind": "samples"}}
        for node in ("rom-node", "files-node"):
            results.assign(node, spec)
        wait_until(lambda: all(results.count.get(n, 0) >= 5 for n in ("rom-node", "files-node")), 40,
                   "results from both nodes (%r)" % results.count)
        assert b"Traceback" not in rom_board.console.since(0)
    finally:
        results.stop()


@pytest.mark.e2e
@pytest.mark.micropython
def test_an_esp32_flashed_through_the_cli_takes_an_update_deployed_through_the_cli(make_board, mosquitto, fleet_home,
                                                                                    capsys, tmp_path):
    """The user's path to the smallest board: `edgefleet flash` puts an ESP32's code in its ROM
    partition (its profile's code store), a controller sees it, and `edgefleet bundle` +
    `edgefleet deploy` put a new version into the other ROM segment, sent in the chunk size
    the board asks for, with no heap error on the board on the way."""
    from edgefleet import models
    from edgefleet.controller.fleet.service import ControllerService
    from edgefleet.controller.install import image
    profile = catalog.load("esp32")
    rom = profile["rom"]
    board = make_board("esp-1", rom_segments=rom["segments"], rom_segment_bytes=rom["segment_bytes"], profile=profile)
    broker = "%s:%d" % (mosquitto.host, mosquitto.port)
    code, out, err = flash_cli(capsys, board.serial_url, "--board", "esp32", "--node", "esp-1", "--broker", broker,
                               "--model", MODEL)
    assert code == 0, err
    assert "code in ROM segment 0 (slot_a)" in out, out
    assert board.wait_console(b"edgefleet-node: connected to", 0, 30), board.console.since(0)[-2000:]

    db = str(tmp_path / "fleet.db")
    controller = ControllerService(mosquitto.host, mosquitto.port, db_path=db, manifests=models.manifests()).start()
    try:
        def node_status():
            code = cli.main(["status", "--db", db, "--json"])
            out, err = capsys.readouterr()
            assert code == 0, err
            return {n["id"]: n for n in json.loads(out)["nodes"]}.get("esp-1")
        wait_until(lambda: (node_status() or {}).get("slot") == "slot_a", 30, "the controller seeing esp-1 in slot_a")
        path = str(tmp_path / "esp32-9.9.efb")
        assert cli.main(["bundle", "--board", "esp32", "--version", "9.9", "--arch", image.SIM_MPY_ARCH, "--simulated",
                         "--models", MODEL, "-o", path]) == 0, capsys.readouterr()
        capsys.readouterr()
        position = len(board.console.since(0))
        code = cli.main(["deploy", path, "--to", "esp-1", "--db", db, "--broker", broker, "--soak", "1",
                         "--window", "60", "--quiet"])
        out, err = capsys.readouterr()
        console = board.console.since(position).decode("utf-8", "replace")
        assert code == 0, out + err + console[-3000:]
        assert "9.9 healthy on 1 node(s)" in out, out + err
        assert "romboot: ROM segment 1" in console, console[-3000:]
        assert "MemoryError" not in console, console[-3000:]
        wait_until(lambda: ((node_status() or {}).get("fw"), (node_status() or {}).get("slot")) == ("9.9", "slot_b"),
                   30, "status showing esp-1 on 9.9 in slot_b")
    finally:
        controller.stop()


@pytest.mark.e2e
@pytest.mark.micropython
def test_a_deploy_cut_off_midway_leaves_a_bootable_board_and_the_next_finishes(make_board, fleet_home):
    board = make_board("cut-node", rom_segments=2)
    first = flasher.flash(board.serial_url, BOARD, node_id="cut-node", broker=("127.0.0.1", 1),
                          model_names=[MODEL], code_store="romfs")
    assert (first.code_store, first.slot) == ("romfs", "slot_a") and first.rom_bytes > 0
    assert board.wait_console(b"romboot: ROM segment 0", 0, 20), board.console.since(0)[-2000:]
    seg0 = segment(board, 0)

    class CutPower(flasher.Progress):
        chunks = 0

        def advance(self, path, nbytes):
            if path.startswith("ROM segment 1"):
                self.chunks += 1
                if self.chunks == 3:
                    board.power_off()

    # New code (every model) goes to slot_b, so into segment 1; the power goes after 3 chunks.
    # The flasher's timeout is what it waits for a silent board; short, but not so short that a
    # loaded machine's slow answer before the cut ends the flash first (CUT_TIMEOUT_S).
    cut = CutPower()
    with pytest.raises(FlashError) as failure:
        flasher.flash(board.serial_url, BOARD, code_store="romfs", progress=cut, timeout=CUT_TIMEOUT_S)
    assert cut.chunks == 3, "the flash failed before the power cut: %s" % failure.value
    assert "ROM segment 1 (slot_b)" in str(failure.value) and "flash again" in str(failure.value)
    seg1 = segment(board, 1)
    assert seg1 != b"\xff" * SEGMENT and seg1.endswith(b"\xff" * 4096)   # written in part
    assert segment(board, 0) == seg0
    assert json.load(open(os.path.join(board.flash_dir, "slots.json")))["active"] == "slot_a"
    assert not os.path.exists(os.path.join(board.flash_dir, "slot_b", romdeploy.ROM_MARK))

    # Power back: the board boots slot_a from its intact segment.
    position = len(board.console.since(0))
    board.power_on()
    assert board.wait_console(b"romboot: ROM segment 0", position, 20), board.console.since(position)[-2000:]
    assert board.wait_console(b"edgefleet-node: cut-node", position, 20)

    # The next flash finishes the job and the board boots slot_b from segment 1.
    position = len(board.console.since(0))
    done = flasher.flash(board.serial_url, BOARD, code_store="romfs")
    assert (done.slot, done.code_store) == ("slot_b", "romfs") and done.rom_bytes > 0
    assert board.wait_console(b"romboot: ROM segment 1", position, 20), board.console.since(position)[-2000:]
    mark = open(os.path.join(board.flash_dir, "slot_b", romdeploy.ROM_MARK)).read().split()
    image1 = segment(board, 1)[:int(mark[1])]
    assert hashlib.sha256(image1).hexdigest() == mark[0] and romfs.unpack(image1)["firmware/node.mpy"]
    assert len(os.listdir(os.path.join(board.flash_dir, "slot_b", "models"))) > 1   # every model, as files
    # Unchanged now: the segment is checked by its hash and not written again.
    again = flasher.flash(board.serial_url, BOARD, code_store="romfs", reset=False)
    assert (again.slot, again.rom_bytes, again.written) == ("slot_b", 0, [])


@pytest.mark.micropython
def test_no_partition_or_a_small_one_falls_back_to_files_saying_why(make_board, fleet_home):
    small = make_board("small-rom", rom_segments=2, rom_segment_bytes=16 * 1024)
    result = flasher.flash(small.serial_url, BOARD, node_id="small", broker=("127.0.0.1", 1), model_names=[MODEL],
                           code_store="romfs", reset=False)
    assert result.code_store == "files"
    assert re.search(r"the ROM image \(\d+ bytes\) is larger than a ROM segment \(16384 bytes\)", result.rom_note)
    assert os.path.exists(os.path.join(small.flash_dir, "slot_a", "firmware", "node.mpy"))
    assert segment(small, 0) == b"\xff" * 16384   # nothing written into the partition

    one = make_board("one-segment", rom_segments=1)
    result = flasher.flash(one.serial_url, BOARD, node_id="one", broker=("127.0.0.1", 1), model_names=[MODEL],
                           code_store="romfs", reset=False)
    assert result.code_store == "files" and "1 segment(s), A/B slots need 2" in result.rom_note

    # The profile's default (no code_store) stays files and never asks the board.
    plain = make_board("plain", rom_segments=2)
    result = flasher.flash(plain.serial_url, BOARD, node_id="plain", broker=("127.0.0.1", 1), model_names=[MODEL],
                           reset=False)
    assert (result.code_store, result.rom_note) == ("files", None)
    assert "code_store" not in PROFILE


def test_the_simulated_partition_programs_like_flash(tmp_path):
    """rom_ioctl's rules, run in the real MicroPython: erase blocks, aligned writes, 1->0 only."""
    from edgefleet.controller.extras import micropython_binary
    from edgefleet.controller.sim.simboard import ROM_SIM_DIR
    path = tmp_path / "parts"
    path.write_bytes(b"\xff" * 3 * 8192)
    code = ("import ef_romsim as r\nf=r.rom_ioctl\n"
            "print(f(1), f(6,0), len(f(2,1)))\n"
            "print(f(3,1,8192), f(4,1,0,b'\\x0f'*256), f(4,1,0,b'\\xf1'*256), bytes(f(2,1)[:2]))\n"
            "print(f(4,1,3,b'x'*256), f(4,1,0,b'x'*3), f(3,1,5,10), f(2,7))\n"
            "print(f(3,1,0,1), bytes(f(2,1)[:2]))\n")
    env = dict(os.environ, MICROPYPATH=ROM_SIM_DIR, EDGEFLEET_SIM_ROM="%s:3:8192" % path)
    out = subprocess.run([micropython_binary(), "-c", code], env=env, capture_output=True, text=True, timeout=20)
    assert out.stdout.split("\n")[:4] == ["3 4096 8192", "256 0 0 b'\\x01\\x01'", "-22 -22 -22 -19",
                                          "256 b'\\xff\\xff'"], out.stdout + out.stderr
    data = path.read_bytes()
    assert data[8192:8194] == b"\xff\xff" and data[8192 + 256:] == b"\xff" * (2 * 8192 - 256)


@pytest.mark.micropython
def test_mpremote_romfs_query_reads_the_simulated_partition(make_board, fleet_home):
    board = make_board("mpremote-node", rom_segments=2)
    flasher.flash(board.serial_url, BOARD, node_id="mp", broker=("127.0.0.1", 1), model_names=[MODEL],
                  code_store="romfs")
    assert board.wait_console(b"romboot: ROM segment 0", 0, 20)
    mpremote = os.path.join(os.path.dirname(sys.executable), "mpremote")
    if not os.path.exists(mpremote):
        pytest.skip("mpremote is not installed in this environment")
    # The node is stopped first by our own client, which sends Ctrl-C again until the raw REPL
    # answers: a Ctrl-C landing while the unix port runs a finaliser can kill that interpreter
    # (seen once: "heap is locked", a fatal NLR), and mpremote tries only once. The query is
    # what this test is about, so mpremote meets an idle REPL.
    link = ReplLink(board.serial_url)
    try:
        link.enter_raw_repl()
        link.exit_raw_repl()
    finally:
        link.close()
    out = subprocess.run([mpremote, "connect", board.serial_url, "resume", "romfs", "query"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    blocks = SEGMENT // 4096
    for index in (0, 1):
        assert "ROMFS%d partition has size %d bytes (%d blocks of 4096 bytes each)" % (index, SEGMENT, blocks) \
            in out.stdout, out.stdout
    assert "Raw contents: d2:cd:31" in out.stdout     # segment 0 holds our image
    assert "Not a valid ROMFS" in out.stdout           # segment 1 is erased


@pytest.mark.e2e
@pytest.mark.micropython
def test_a_link_lost_during_the_segment_write_leaves_the_old_slot_and_the_next_flash_finishes(make_board,
                                                                                              fleet_home):
    from edgefleet.controller.sim.linkproxy import LinkProxy
    board = make_board("link-node", rom_segments=2)
    flasher.flash(board.serial_url, BOARD, node_id="link-node", broker=("127.0.0.1", 1), model_names=[MODEL],
                  code_store="romfs")
    assert board.wait_console(b"romboot: ROM segment 0", 0, 20), board.console.since(0)[-2000:]
    # The serial link runs through a proxy that goes silent after the third chunk of segment 1.
    proxy = LinkProxy(board.serial_port)
    proxy.start()

    class CutLink(flasher.Progress):
        chunks = 0

        def advance(self, path, nbytes):
            if path.startswith("ROM segment 1"):
                self.chunks += 1
                if self.chunks == 3:
                    proxy.cut()

    cut = CutLink()
    try:
        with pytest.raises(FlashError) as failure:
            flasher.flash("socket://127.0.0.1:%d" % proxy.port, BOARD, code_store="romfs", progress=cut,
                          timeout=CUT_TIMEOUT_S)
    finally:
        proxy.stop()
    assert cut.chunks == 3, "the flash failed before the link was cut: %s\nthe board's console:\n%s" % (
        failure.value, board.console.since(0)[-3000:].decode("utf-8", "replace"))
    assert "ROM segment 1 (slot_b)" in str(failure.value) and "flash again" in str(failure.value)
    assert json.load(open(os.path.join(board.flash_dir, "slots.json")))["active"] == "slot_a"
    assert not os.path.exists(os.path.join(board.flash_dir, "slot_b", romdeploy.ROM_MARK))

    # A reset now boots slot_a from segment 0; the next flash, on the cable again, finishes.
    position = len(board.console.since(0))
    board.reset()
    assert board.wait_console(b"romboot: ROM segment 0", position, 20), board.console.since(position)[-2000:]
    assert board.wait_console(b"edgefleet-node: link-node", position, 20)
    position = len(board.console.since(0))
    done = flasher.flash(board.serial_url, BOARD, code_store="romfs")
    assert (done.slot, done.code_store) == ("slot_b", "romfs") and done.rom_bytes > 0
    assert board.wait_console(b"romboot: ROM segment 1", position, 20), board.console.since(position)[-2000:]
