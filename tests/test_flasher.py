"""`edgefleet flash` and `edgefleet keygen`: the serial flasher against simulated MCU boards
(the real MicroPython unix port behind a socket:// UART), from an empty flash to a node on the
broker, re-flashing, a power cut mid-file, a full flash; and its pieces on their own."""
import hashlib
import io
import json
import os
import socket
import subprocess
import threading
import time

import sqlite3

import paho.mqtt.client as mqtt
import pytest

from edgefleet import models
from edgefleet.boards import catalog
from edgefleet.controller import cli
from edgefleet.controller.install import flasher, image, keys
from edgefleet.controller.errors import EXIT_CONFIG, EXIT_CONNECTION, ConfigError, FlashError
from edgefleet.controller.cli.progress import FlashProgress
from edgefleet.controller.install.serialrepl import NoAnswer, ReplExecError
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.simboard import McuBoard, sim_machine
from edgefleet.controller.sim.simfleet import simulated_heap_bytes
from support.secrets import assert_no_secret
from support.waiting import wait_until

BOARD = "rpi-pico-w"
HEAP = 192 * 1024
# The MCU profile with the smallest heap: flashing must fit beside a node it interrupts there.
SMALL = catalog.load("esp32")


@pytest.fixture
def fleet_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("EDGEFLEET_HOME", str(home))
    return home


@pytest.fixture
def empty_board(tmp_path):
    """A simulated MCU board with nothing on its flash: it sits at the REPL."""
    boards = []

    def make(flash_dir=None, heap_bytes=HEAP, ready=b">>> ", **kwargs):
        flash = flash_dir or str(tmp_path / ("flash%d" % len(boards)))
        os.makedirs(flash, exist_ok=True)
        board = McuBoard("empty%d" % len(boards), flash, heap_bytes, console_log=str(tmp_path / "console.log"),
                         **kwargs)
        boards.append(board)
        board.start()
        assert board.wait_console(ready, timeout=10), board.console.since(0)
        return board

    yield make
    for board in boards:
        board.stop()


class Hellos:
    """The hello messages nodes publish on the broker."""

    def __init__(self, broker):
        self.seen = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flash-test-observer")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("ef/node/+/hello", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        with self._cond:
            self.seen.append(json.loads(message.payload))
            self._cond.notify_all()

    def wait(self, node, count, timeout=20):
        with self._cond:
            return self._cond.wait_for(lambda: len(self.of(node)) >= count, timeout)

    def of(self, node):
        return [msg for msg in self.seen if msg.get("node") == node]

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


def flash_cli(capsys, *argv):
    code = cli.main(["flash"] + list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def flash_tree(flash_dir):
    """{path: sha256} of a board's flash, as the flasher's local_tree() sees a folder."""
    return {path: digest for path, _l, _s, digest in flasher.local_tree(flash_dir)}


# -- a whole flash, end to end --------------------------------------------------------------

def pointer(flash_dir):
    with open(os.path.join(flash_dir, "slots.json")) as f:
        return json.load(f)


@pytest.mark.e2e
@pytest.mark.micropython
def test_flash_empty_board_then_unchanged_then_changed(empty_board, mosquitto, fleet_home, capsys, tmp_path):
    hellos = Hellos(mosquitto)
    board = empty_board(heap_bytes=simulated_heap_bytes(SMALL))
    broker = "%s:%d" % (mosquitto.host, mosquitto.port)
    flash_dir = str(tmp_path / "flash0")
    try:
        code, out, err = flash_cli(capsys, board.serial_url, "--board", SMALL["name"], "--node", "flash-a",
                                   "--broker", broker)
        assert code == 0, err
        assert "wrote" in out and "0 unchanged" in out
        assert "wrote main.py" in err   # not a TTY: one line per file
        assert err.strip().splitlines()[-1].startswith("wrote main.py ")   # the entry point goes last
        # The board rebooted into the node, which says hello on the broker, from slot_a.
        assert hellos.wait("flash-a", 1), board.console.since(0)[-2000:]
        assert board.boots == 2
        hello = hellos.of("flash-a")[0]
        assert (hello["fw"], hello["slot"]) == (image.firmware_version(), "slot_a")
        assert pointer(flash_dir)["active"] == "slot_a" and not pointer(flash_dir)["tentative"]
        assert os.path.exists(os.path.join(flash_dir, "slot_a", "MANIFEST"))
        assert not any(os.path.exists(os.path.join(flash_dir, d)) for d in image.FLAT_DIRS)
        key_on_board = (tmp_path / "flash0" / keys.BOARD_FILE).read_text()
        assert keys.parse(key_on_board) == keys.public(keys.load())   # the host key's public half
        assert_no_secret(flash_dir, keys.load())

        # Unchanged: nothing written, node id and broker kept from the board's config.json.
        started = time.monotonic()
        result = flasher.flash(board.serial_url, SMALL["name"])
        assert time.monotonic() - started < 5
        assert result.written == [] and result.removed == [] and result.unchanged > 40
        assert result.node_id == "flash-a" and (result.broker.host, result.broker.port) == (mosquitto.host, mosquitto.port)
        assert result.slot == "slot_a"
        assert hellos.wait("flash-a", 2), board.console.since(0)[-2000:]

        # One model fewer is new code: a fresh slot set in the other slot, the old one removed.
        result = flasher.flash(board.serial_url, SMALL["name"], model_names=["digits_dense"])
        written = [path for path, _ in result.written]
        assert result.slot == "slot_b" and "slots.json" in written
        assert all(p.startswith("slot_b/") for p in written if p != "slots.json")
        assert result.removed and all(p.startswith("slot_a/") for p in result.removed)
        assert not os.path.exists(os.path.join(flash_dir, "slot_a"))
        assert not (tmp_path / "flash0" / "slot_b" / "models" / "digits_conv").exists()
        assert pointer(flash_dir)["active"] == "slot_b" and pointer(flash_dir)["prev"] is None
        assert hellos.wait("flash-a", 3), board.console.since(0)[-2000:]
        assert hellos.of("flash-a")[-1]["slot"] == "slot_b"

        # A new node id changes config.json only, and only config.json is sent.
        result = flasher.flash(board.serial_url, SMALL["name"], node_id="flash-b", model_names=["digits_dense"])
        assert [path for path, _ in result.written] == ["config.json"] and result.slot == "slot_b"
        assert hellos.wait("flash-b", 1), board.console.since(0)[-2000:]
    finally:
        hellos.stop()


def stored_results(db_path, node):
    """{boot: [seq, ...]} of the results the registry holds from `node`."""
    db = sqlite3.connect(db_path)
    try:
        out = {}
        for boot, seq in db.execute("SELECT boot, seq FROM results WHERE node=? ORDER BY boot, seq", (node,)):
            out.setdefault(boot, []).append(seq)
        return out
    finally:
        db.close()


@pytest.mark.e2e
@pytest.mark.micropython
def test_flat_board_is_converted_keeping_its_state(empty_board, mosquitto, fleet_home, tmp_path):
    """A board flashed before A/B slots (firmware at the flash root) with undelivered results
    in its outbox: the next flash converts it, and the node carries on where it was."""
    profile = catalog.load(BOARD)
    flash_dir = str(tmp_path / "old")
    cfg = image.node_config("conv-1", profile, mosquitto.host, mosquitto.port, simulated=True, keepalive=2)
    image.write_image(flash_dir, cfg, model_names=["digits_dense"])   # the layout before slots
    with open(os.path.join(flash_dir, "ota-floor.json"), "w") as f:
        f.write('{"seq": 7, "sig": "00"}')
    hellos = Hellos(mosquitto)
    assign = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flash-test-assign")
    assign.connect(mosquitto.host, mosquitto.port)
    assign.loop_start()
    # No controller yet: the node infers from this assignment and nothing acknowledges its
    # results, so they stay in its outbox on flash.
    spec = {"id": "digits", "model": "digits_dense", "rate": 20, "input": {"kind": "samples"}}
    assign.publish("ef/node/conv-1/assign", json.dumps({"v": 1, "epoch": 1, "wl": [spec]}), qos=1,
                   retain=True).wait_for_publish(5)
    controller = None
    try:
        board = empty_board(flash_dir, heap_bytes=simulated_heap_bytes(profile), machine=sim_machine(profile),
                            ready=b"edgefleet-node: conv-1")
        assert hellos.wait("conv-1", 1), board.console.since(0)[-2000:]
        assert "slot" not in hellos.of("conv-1")[0]
        outbox = os.path.join(flash_dir, "data", "outbox")
        wait_until(lambda: sum(os.path.getsize(os.path.join(outbox, n)) for n in os.listdir(outbox)) > 2000
                   if os.path.isdir(outbox) else False, 30, "results in the flat node's outbox")
        assign.publish("ef/node/conv-1/assign", b"", qos=1, retain=True).wait_for_publish(5)

        result = flasher.flash(board.serial_url, BOARD, model_names=["digits_dense"])
        # config.json kept: node id and broker came from the board.
        assert result.node_id == "conv-1" and result.broker.port == mosquitto.port and result.slot == "slot_a"
        assert image.read_config(flash_dir)["broker"]["keepalive"] == 10   # rewritten, same node and broker
        assert not any(os.path.exists(os.path.join(flash_dir, d)) for d in image.FLAT_DIRS)   # nothing shadows the slot
        assert any(p.startswith("firmware/") for p in result.removed)
        assert pointer(flash_dir)["active"] == "slot_a"
        with open(os.path.join(flash_dir, "ota-floor.json")) as f:
            assert f.read() == '{"seq": 7, "sig": "00"}'

        # The node boots from slot_a; its boot counter goes on from the flat boot, exactly: the
        # watchdog the flat node armed survives the flasher's Ctrl-C, as a real board's does,
        # and the flasher kept feeding it (ef_wdt), so it reset nothing.
        assert wait_until(lambda: [h for h in hellos.of("conv-1") if h.get("slot")], 20,
                          "a hello from the slot"), board.console.since(0)[-2000:]
        hello = next(h for h in hellos.of("conv-1") if h.get("slot"))
        assert hello["slot"] == "slot_a" and hello["boot"] == 2, (hello, board.watchdog_resets)
        # A controller now: the first boot's results, held on flash across the re-flash, arrive.
        db_path = str(tmp_path / "fleet.db")
        controller = ControllerService(mosquitto.host, mosquitto.port, db_path=db_path, manifests=models.manifests(),
                                       workloads=[dict(spec, replicas=1)]).start()
        stored = wait_until(lambda: (lambda got: got if len(got.get(1, [])) >= 10 else None)(stored_results(db_path, "conv-1")),
                            60, "boot 1's results from the converted node")
        assert stored[1][:10] == list(range(1, 11))
    finally:
        if controller is not None:
            controller.stop()
        assign.loop_stop()
        assign.disconnect()
        hellos.stop()


def flat_node(empty_board, mosquitto, tmp_path, node, **board_kwargs):
    """A board flashed before A/B slots whose node runs and has armed the board's watchdog."""
    profile = catalog.load(BOARD)
    flash_dir = str(tmp_path / node)
    cfg = image.node_config(node, profile, mosquitto.host, mosquitto.port, simulated=True, keepalive=2)
    image.write_image(flash_dir, cfg, model_names=["digits_dense"])
    board = empty_board(flash_dir, heap_bytes=simulated_heap_bytes(profile), machine=sim_machine(profile),
                        ready=("edgefleet-node: %s" % node).encode(), **board_kwargs)
    wait_until(lambda: board.watchdog.timeout_s is not None, 20, "the node arming the watchdog")
    assert board.watchdog.timeout_s > 5, board.watchdog.timeout_s
    return board, flash_dir


@pytest.mark.e2e
@pytest.mark.micropython
def test_slow_flash_of_a_running_node_keeps_its_watchdog_fed(empty_board, mosquitto, fleet_home, tmp_path):
    """The node armed the watchdog and `edgefleet flash` interrupts it: the conversion to slots,
    over a link paced to a real UART's 115200 baud, takes longer than the watchdog's timeout,
    and the board is not reset until the flasher's own soft reset."""
    hellos = Hellos(mosquitto)
    try:
        board, _flash_dir = flat_node(empty_board, mosquitto, tmp_path, "slow-1", baud=115200)
        timeout_s = board.watchdog.timeout_s
        result = flasher.flash(board.serial_url, BOARD, model_names=["digits_dense"])
        assert result.seconds > timeout_s + 1, (result.seconds, timeout_s)   # long enough to be bitten
        assert result.slot == "slot_a"
        assert wait_until(lambda: [h for h in hellos.of("slow-1") if h.get("slot")], 20,
                          "a hello from the slot"), board.console.since(0)[-2000:]
        hello = next(h for h in hellos.of("slow-1") if h.get("slot"))
        assert hello["boot"] == 2, hello
        assert board.watchdog_resets == 0 and board.boots == 2, board.console.since(0)[-3000:]
    finally:
        hellos.stop()


@pytest.mark.e2e
@pytest.mark.micropython
def test_watchdog_runs_at_the_flashers_repl_and_ef_feed_keeps_it_fed(empty_board, mosquitto, fleet_home, tmp_path):
    """What the test above relies on: after the flasher's Ctrl-C the armed watchdog still runs
    (a flasher that stopped feeding would see the board reset under it), and the agent's
    ef_feed is what holds it off. A board that never armed one is left alone."""
    board, _flash_dir = flat_node(empty_board, mosquitto, tmp_path, "idle-1")
    timeout_s = board.watchdog.timeout_s
    link, agent, _info = flasher.open_session(board.serial_url)
    try:
        assert link.exec("print(callable(ef_wdt))").strip() == b"True"   # kept by flash_release
        boots = board.boots
        fed_until = time.monotonic() + timeout_s + 3
        while time.monotonic() < fed_until:   # fed: well past the timeout, no reset
            agent.feed()
            time.sleep(1.0)
        assert board.watchdog_resets == 0 and board.boots == boots, board.console.since(0)[-3000:]
        idle_from = time.monotonic()          # not fed: the board is reset under the REPL
        assert wait_until(lambda: board.watchdog_resets == 1, timeout_s + 5, "a watchdog reset")
        assert time.monotonic() - idle_from > timeout_s - 1.5
        assert board.wait_boots(boots + 1) and board.boots == boots + 1 and board.watchdog_resets == 1
    finally:
        link.close()

    empty = empty_board()
    link, agent, _info = flasher.open_session(empty.serial_url)
    try:
        assert link.exec("print('ef_wdt' in globals())").strip() == b"False"
        agent.feed()   # nothing to feed: a no-op, nothing armed
        assert empty.watchdog.timeout_s is None
    finally:
        link.close()


def test_unknown_model_is_refused_before_anything_is_created(fleet_home, capsys, tmp_path):
    code, _out, err = flash_cli(capsys, "socket://127.0.0.1:1", "--board", BOARD, "--node", "x",
                                "--broker", "h:1", "--model", "nosuchmodel")
    assert code == EXIT_CONFIG
    assert err.startswith("edgefleet: unknown model 'nosuchmodel' (choose from: ")
    assert all(name in err for name in models.names())
    assert not fleet_home.exists()   # no signing key, no node login


@pytest.mark.micropython
def test_board_of_another_kind_is_refused_naming_both(empty_board, fleet_home, tmp_path):
    pico = catalog.load(BOARD)
    board = empty_board(machine=sim_machine(pico))
    with pytest.raises(FlashError) as failure:
        flasher.flash(board.serial_url, SMALL["name"], node_id="x", broker=("127.0.0.1", 1883))
    assert "is a rpi-pico-w" in str(failure.value) and "not a esp32" in str(failure.value)
    assert "--board rpi-pico-w" in str(failure.value)
    assert os.listdir(str(tmp_path / "flash0")) == []   # nothing written
    assert not fleet_home.exists()
    # A real board's own words: what MicroPython on an ESP32 reports is refused as a Pico W.
    with pytest.raises(FlashError, match="is a esp32"):
        flasher.check_board({"machine": "Generic ESP32 module with ESP32"}, pico, "PORT")
    flasher.check_board({"machine": "Raspberry Pi Pico W with RP2040"}, pico, "PORT")
    flasher.check_board({"machine": "linux [GCC 14.2.1] version"}, pico, "PORT")   # unknown: not refused


@pytest.mark.e2e
@pytest.mark.micropython
def test_power_cut_mid_file_is_a_clear_error_and_the_next_flash_repairs(empty_board, fleet_home, tmp_path):
    board = empty_board(heap_bytes=simulated_heap_bytes(SMALL))
    big = "slot_a/models/digits_conv/model.tflite"

    class CutPower(flasher.Progress):
        def advance(self, path, nbytes):
            if path == big:
                board.power_off()

    # timeout: how long the flasher waits for the silent board; not so short that a loaded
    # machine's slow answer before the cut ends the flash first.
    with pytest.raises(FlashError) as failure:
        flasher.flash(board.serial_url, SMALL["name"], node_id="cut", broker=("127.0.0.1", 1883), progress=CutPower(),
                      timeout=8)
    assert failure.value.path == big and big in str(failure.value) and "flash again" in str(failure.value)
    flash_dir = str(tmp_path / "flash0")
    assert not os.path.exists(os.path.join(flash_dir, big))   # only ever a .part, never half a file
    assert not os.path.exists(os.path.join(flash_dir, "main.py"))   # top-level files go last
    assert not os.path.exists(os.path.join(flash_dir, "slots.json"))
    assert not os.path.exists(os.path.join(flash_dir, "slot_a", "MANIFEST"))   # a slot's manifest last in it

    board.power_on()
    result = flasher.flash(board.serial_url, SMALL["name"], node_id="cut", broker=("127.0.0.1", 1883), reset=False)
    assert big in [path for path, _ in result.written]
    assert 0 < result.unchanged   # what arrived before the cut is not sent again
    assert big + ".part" in result.removed
    # The board now holds exactly the image, as built here for the same node.
    expected = str(tmp_path / "expected")
    cfg = image.node_config("cut", SMALL, "127.0.0.1", 1883, simulated=True)
    image.write_slotted_image(expected, cfg, key=keys.load())
    assert flash_tree(flash_dir) == flash_tree(expected)


@pytest.mark.e2e
@pytest.mark.micropython
def test_full_flash_is_a_clear_error(empty_board, fleet_home, tmp_path):
    flash_dir = str(tmp_path / "small_flash")
    os.makedirs(flash_dir)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", flash_dir],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip("a small flash needs a tmpfs mount, which needs root: " + mounted.stderr.strip())
    board = None
    try:
        board = empty_board(flash_dir)
        with pytest.raises(FlashError) as failure:
            flasher.flash(board.serial_url, BOARD, node_id="full", broker=("127.0.0.1", 1883))
        message = str(failure.value)
        assert "is full" in message and failure.value.path in message
        assert not any(name.endswith(".part") for _, _, names in os.walk(flash_dir) for name in names)
    finally:
        if board is not None:
            board.stop()   # its interpreter runs in the mount
        subprocess.run(["umount", flash_dir], check=True)


@pytest.mark.micropython
def test_file_that_fails_its_hash_check_is_not_installed(empty_board, tmp_path):
    board = empty_board()
    tree = tmp_path / "tree"
    (tree / "lib").mkdir(parents=True)
    (tree / "lib" / "a.txt").write_bytes(b"first version\n")
    link, agent, _info = flasher.open_session(board.serial_url)
    try:
        flasher.sync(agent, str(tree))
        assert (tmp_path / "flash0" / "lib" / "a.txt").read_bytes() == b"first version\n"

        class ChangeUnderway(flasher.Progress):
            def start(self, files, total_bytes):
                # The file changes after its sha256 was taken: the board's check must catch it.
                (tree / "lib" / "a.txt").write_bytes(b"second version, altered in flight\n")

        (tree / "lib" / "a.txt").write_bytes(b"second version\n")
        with pytest.raises(FlashError) as failure:
            flasher.sync(agent, str(tree), ChangeUnderway())
        assert "failed its hash check" in str(failure.value) and failure.value.path == "lib/a.txt"
        assert (tmp_path / "flash0" / "lib" / "a.txt").read_bytes() == b"first version\n"
        assert not (tmp_path / "flash0" / "lib" / "a.txt.part").exists()
    finally:
        link.close()


@pytest.mark.micropython
def test_binary_files_arrive_intact_with_and_without_compression(empty_board, tmp_path):
    board = empty_board()
    tree = tmp_path / "tree"
    (tree / "d" / "e").mkdir(parents=True)
    payloads = {"d/all_bytes.bin": bytes(range(256)) * 40,             # compresses
                "d/e/random.bin": os.urandom(flasher.CHUNK_BYTES * 2 + 17),   # does not; 3 chunks
                "d/empty.bin": b"", "top.txt": b"it's a \\ 'quoted'\r\n\x00\x03\x04 line\n"}
    for path, data in payloads.items():
        (tree / path).write_bytes(data)
    link, agent, _info = flasher.open_session(board.serial_url)
    try:
        assert agent.deflate and agent.literals
        result = flasher.sync(agent, str(tree))
        agent.literals = False   # the base64 path, as for a board whose lexer is not 8-bit clean
        (tree / "d" / "e" / "random.bin").write_bytes(os.urandom(5000))
        payloads["d/e/random.bin"] = (tree / "d" / "e" / "random.bin").read_bytes()
        second = flasher.sync(agent, str(tree))
    finally:
        link.close()
    assert sorted(path for path, _ in result.written) == sorted(payloads)
    assert [path for path, _ in second.written] == ["d/e/random.bin"]
    for path, data in payloads.items():
        assert (tmp_path / "flash0" / path).read_bytes() == data


@pytest.mark.micropython
def test_classic_raw_repl_when_raw_paste_is_off(empty_board, tmp_path):
    board = empty_board()
    tree = tmp_path / "tree"
    (tree / "lib").mkdir(parents=True)
    (tree / "lib" / "m.py").write_bytes(b"X = 1\n" * 300)   # more than one 256-byte piece
    link, agent, _info = flasher.open_session(board.serial_url)
    try:
        assert link.raw_paste is True
        link.raw_paste = False   # as with a board older than raw-paste mode (MicroPython < 1.14)
        result = flasher.sync(agent, str(tree))
        assert link.exec("print(6 * 7)") == b"42\n"
    finally:
        link.close()
    assert [path for path, _ in result.written] == ["lib/m.py"]
    assert (tmp_path / "flash0" / "lib" / "m.py").read_bytes() == b"X = 1\n" * 300


@pytest.mark.micropython
def test_paced_link_runs_at_the_baud_rate(empty_board):
    board = empty_board(baud=19200)   # 1920 bytes/s each way
    from edgefleet.controller.install.serialrepl import ReplLink
    with ReplLink(board.serial_url) as link:
        link.enter_raw_repl()
        started = time.monotonic()
        out = link.exec("x = %r\nprint('y' * 1000)" % ("z" * 1000))
        elapsed = time.monotonic() - started
    assert out == b"y" * 1000 + b"\n"
    # ~1030 bytes each way, both directions paced and in turn: about 1.07 s
    assert 0.9 < elapsed < 2.5, elapsed


# -- errors before anything is written -------------------------------------------------------

def test_silent_port_is_a_clear_error(fleet_home):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = "socket://127.0.0.1:%d" % silent.getsockname()[1]
        with pytest.raises(NoAnswer) as failure:
            flasher.flash(url, BOARD, node_id="x", broker=("h", 1), timeout=1.5)
    assert "no MicroPython REPL answers on " + url in str(failure.value)
    assert not fleet_home.exists()   # no signing key, no node login for a board that never answered


def test_closed_port_is_a_clear_error_from_the_cli(fleet_home, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = "socket://127.0.0.1:%d" % probe.getsockname()[1]
    code, _out, err = flash_cli(capsys, url, "--board", BOARD, "--node", "x", "--broker", "h:1")
    assert code == EXIT_CONNECTION and err.startswith("edgefleet: cannot open " + url)


def test_linux_board_is_refused_with_the_command_to_use(fleet_home):
    with pytest.raises(ConfigError, match="edgefleet provision"):
        flasher.flash("socket://127.0.0.1:1", "rpi4")


def test_native_code_for_another_arch_is_refused(tmp_path):
    x64_viper = tmp_path / "k.mpy"
    x64_viper.write_bytes(b"M\x06" + bytes([(2 << 2) | 3]) + b"rest")
    entries = flasher.local_tree(str(tmp_path))
    xtensawin_board = {"mpy": 6 | (3 << 8) | (10 << 10)}
    with pytest.raises(FlashError, match="native code for xtensawin, the image's is compiled for x64"):
        flasher.check_compatible(xtensawin_board, entries, "PORT")
    flasher.check_compatible({"mpy": 6 | (3 << 8) | (2 << 10)}, entries, "PORT")
    with pytest.raises(FlashError, match=".mpy version 5"):
        flasher.check_compatible({"mpy": 5 | (2 << 10)}, entries, "PORT")


def test_exec_error_carries_the_oserror_number():
    err = ReplExecError("m", stderr="Traceback...\nOSError: [Errno 28] ENOSPC\n")
    assert err.errno == 28
    assert ReplExecError("m", stderr="OSError: 28\n").errno == 28
    assert ReplExecError("m", stderr="MemoryError\n").errno is None


def test_tree_digest_is_over_paths_and_contents(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.py").write_bytes(b"1")
    (tmp_path / "main.py").write_bytes(b"2")
    entries = flasher.local_tree(str(tmp_path))
    assert flasher.image_roots(entries) == (["a"], ["main.py"])
    expected = hashlib.sha256(b"a/x.py\n" + hashlib.sha256(b"1").hexdigest().encode() + b"\n" +
                              b"main.py\n" + hashlib.sha256(b"2").hexdigest().encode() + b"\n").hexdigest()
    assert flasher.tree_digest(entries) == expected


def test_progress_is_one_line_per_file_off_a_terminal_and_a_bar_on_one():
    log = io.StringIO()
    plain = FlashProgress(log, tty=False)
    plain.start(2, 3000)
    plain.advance("a.mpy", 1000)
    plain.file_done("a.mpy", 1000)
    plain.removed("old.mpy")
    plain.finish()
    assert log.getvalue().splitlines() == ["sending 2 files (2.9 KB)", "wrote a.mpy (1000 bytes)", "removed old.mpy"]
    screen = io.StringIO()
    bar = FlashProgress(screen, tty=True)
    bar.start(1, 2000)
    bar.advance("b.mpy", 1000)
    bar.finish()
    assert screen.getvalue().startswith("\r[" + "#" * 15 + "." * 15 + "]  50%") and screen.getvalue().endswith("\n")


def test_keygen_creates_refuses_to_replace_and_replaces_when_forced(fleet_home, capsys):
    assert cli.main(["keygen"]) == 0
    first = keys.load()
    assert oct(os.stat(keys.default_path()).st_mode & 0o777) == "0o600"
    assert cli.main(["keygen"]) == EXIT_CONFIG
    assert "edgefleet: a signing key already exists" in capsys.readouterr().err
    assert keys.load() == first
    assert cli.main(["keygen", "--force"]) == 0
    assert keys.load() != first


# -- Wi-Fi settings ------------------------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.micropython
def test_wifi_settings_are_written_kept_and_replaced(empty_board, mosquitto, fleet_home, capsys, tmp_path, monkeypatch):
    """--wifi goes into config.json with the password from a file or the environment, never
    the command line; a re-flash without --wifi keeps it; a simulated board boots with it (and
    leaves the network to its host)."""
    monkeypatch.delenv("EDGEFLEET_WIFI_PASSWORD", raising=False)
    hellos = Hellos(mosquitto)
    board = empty_board(heap_bytes=simulated_heap_bytes(SMALL))
    broker = "%s:%d" % (mosquitto.host, mosquitto.port)
    flash_dir = str(tmp_path / "flash0")
    secret = tmp_path / "wifi.pass"
    secret.write_text("pass word-1\n")
    try:
        code, out, err = flash_cli(capsys, board.serial_url, "--board", SMALL["name"], "--node", "wifi-a",
                                   "--broker", broker, "--wifi", "lab \u00e9", "--wifi-password-file", str(secret),
                                   "--wifi-country", "de")
        assert code == 0, err
        assert "Wi-Fi 'lab \u00e9'" in out and "pass word-1" not in out + err
        assert image.read_config(flash_dir)["wifi"] == {"ssid": "lab \u00e9", "password": "pass word-1", "country": "DE"}
        assert hellos.wait("wifi-a", 1), board.console.since(0)[-2000:]   # the sim HAL ignores it

        # Kept: a re-flash without --wifi (nor node, nor broker) changes nothing on the board.
        before = image.read_config(flash_dir)
        code, out, err = flash_cli(capsys, board.serial_url, "--board", SMALL["name"])
        assert code == 0, err
        assert image.read_config(flash_dir) == before, (before, image.read_config(flash_dir))
        assert "board up to date" in out and "Wi-Fi 'lab \u00e9'" in out
        assert image.read_config(flash_dir)["wifi"]["password"] == "pass word-1"

        # Replaced: an open network, its empty password from the environment; only config.json changes.
        monkeypatch.setenv("EDGEFLEET_WIFI_PASSWORD", "")
        result = flasher.flash(board.serial_url, SMALL["name"], wifi=flasher.wifi_settings("cafe", ""))
        assert [path for path, _ in result.written] == ["config.json"] and result.wifi == "cafe"
        code, out, err = flash_cli(capsys, board.serial_url, "--board", SMALL["name"], "--wifi", "cafe")
        assert code == 0 and "board up to date" in out, err
        assert image.read_config(flash_dir)["wifi"] == {"ssid": "cafe", "password": "", "country": None}
        assert hellos.wait("wifi-a", 3), board.console.since(0)[-2000:]
    finally:
        hellos.stop()


@pytest.mark.parametrize("argv,env,file_text,message", [
    (["--wifi", ""], "pass-word-1", None, "an SSID is 1 to 32 bytes, this one is 0"),
    (["--wifi", "x" * 33], "pass-word-1", None, "this one is 33"),
    (["--wifi", "\u00e9" * 17], "pass-word-1", None, "this one is 34"),     # 17 characters, 34 bytes
    (["--wifi", "lab"], "short12", None, "password (7 characters) is no WPA2 passphrase"),
    (["--wifi", "lab"], "p" * 64, None, "password (64 characters) is no WPA2 passphrase"),
    (["--wifi", "lab"], "pass-w\u00f6rd-1", None, "8 to 63 printable ASCII"),
    (["--wifi", "lab"], None, None, "give its password in a file (--wifi-password-file FILE) or in $EDGEFLEET_WIFI_PASSWORD"),
    (["--wifi", "lab"], None, "seven77\n", "password (7 characters)"),
    (["--wifi", "lab", "--wifi-country", "DEU"], "pass-word-1", None, "--wifi-country 'DEU': a two-letter"),
    (["--wifi-country", "DE"], None, None, "--wifi-password-file and --wifi-country go with --wifi SSID"),
    (["--wifi", "lab", "--wifi-password-file", "/nonexistent/wifi.pass"], None, None, "--wifi-password-file /nonexistent"),
])
def test_bad_wifi_settings_are_refused_before_the_board_is_touched(argv, env, file_text, message, fleet_home, capsys,
                                                                   tmp_path, monkeypatch):
    if env is None:
        monkeypatch.delenv("EDGEFLEET_WIFI_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("EDGEFLEET_WIFI_PASSWORD", env)
    if file_text is not None:
        (tmp_path / "wifi.pass").write_text(file_text)
        argv = argv + ["--wifi-password-file", str(tmp_path / "wifi.pass")]
    # Nothing listens on the port: a setting that passed would end in a connection error instead.
    code, out, err = flash_cli(capsys, "socket://127.0.0.1:1", "--board", BOARD, "--node", "x", "--broker", "h:1",
                               *argv)
    assert code == EXIT_CONFIG, err
    assert err.startswith("edgefleet: ") and message in err and len(err.strip().splitlines()) == 1, err
    for secret in (env, file_text):
        if secret and len(secret.strip()) > 2:
            assert secret.strip() not in err
    assert not fleet_home.exists()
