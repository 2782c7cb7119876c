"""Simulated boards: the real MicroPython interpreter behind a TCP UART, and supervised Linux nodes."""
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from edgefleet.controller.errors import BoardError
from edgefleet.controller.install import image
from edgefleet.controller.sim.simboard import McuBoard
from support.simboard_fixtures import (
    BOOT_TIMEOUT_S,
    RawReplClient,
    make_linux,  # noqa: F401  (fixture)
    make_mcu,  # noqa: F401  (fixture)
    pid_alive,
    wait_until,
    write_firmware,
)

pytestmark = pytest.mark.micropython

MPREMOTE = os.path.join(os.path.dirname(sys.executable), "mpremote")


def mpremote(board, *args, timeout=60):
    return subprocess.run([MPREMOTE, "connect", board.serial_url, "resume", *args],
                          capture_output=True, text=True, timeout=timeout)


# -- the UART and the REPL --------------------------------------------------------------------

def test_serial_client_interrupts_firmware_and_gets_raw_repl(make_mcu):
    board = make_mcu()
    with RawReplClient(board.serial_url) as client:
        seen = client.enter_raw_repl()
    assert b"KeyboardInterrupt" in seen
    assert board.running and board.boots == 1


def test_raw_repl_exec_returns_stdout_and_stderr(make_mcu):
    board = make_mcu()
    with RawReplClient(board.serial_url) as client:
        client.enter_raw_repl()
        assert client.exec("print(6 * 7)") == (b"42\n", b"")
        out, err = client.exec("1 / 0")
    assert out == b"" and b"ZeroDivisionError" in err


def test_heap_is_the_boards_ram(make_mcu):
    board = make_mcu(heap_bytes=96 * 1024)
    with RawReplClient(board.serial_url) as client:
        client.enter_raw_repl()
        free, _ = client.exec("import gc; gc.collect(); print(gc.mem_free())")
        _, err = client.exec("buf = bytearray(200 * 1024)")
    assert 64 * 1024 < int(free) < 96 * 1024
    assert b"MemoryError" in err


def test_ctrl_c_interrupts_code_run_from_raw_repl(make_mcu):
    board = make_mcu()
    with RawReplClient(board.serial_url) as client:
        client.enter_raw_repl()
        client.port.write(b"while True:\n    pass\n\x04")
        client.read_until(b"OK")
        time.sleep(0.2)
        client.port.write(b"\x03")
        assert client.read_until(b"\x04") == b"\x04"   # no stdout
        err = client.read_until(b"\x04>")
        assert b"KeyboardInterrupt" in err
        assert client.exec("print('still here')") == (b"still here\n", b"")
    assert board.boots == 1


def test_repeated_ctrl_c_does_not_kill_the_interpreter(make_mcu):
    board = make_mcu()
    pid = board.pid
    with RawReplClient(board.serial_url) as client:
        client.port.write(b"\x03\x03\x03")
        client.enter_raw_repl()
        assert client.exec("print(1)") == (b"1\n", b"")
    assert board.pid == pid and board.boots == 1


def test_interrupt_sent_while_booting_still_reaches_the_firmware(make_mcu):
    board = make_mcu()
    board.reset()
    with RawReplClient(board.serial_url) as client:   # connects within milliseconds of the boot
        seen = client.enter_raw_repl()
        assert client.exec("print('repl')") == (b"repl\n", b"")
    assert b"KeyboardInterrupt" in seen and board.boots == 2


def test_new_client_replaces_the_connected_one(make_mcu):
    board = make_mcu()
    first = socket.create_connection(("127.0.0.1", board.serial_port), timeout=5)
    try:
        assert wait_until(lambda: board.client_connected, 5)
        with RawReplClient(board.serial_url) as second:
            second.enter_raw_repl()
            # The board closed the replaced connection: end of stream, after whatever console
            # output reached it before the second client did (a REPL newline, at times), and
            # none of the second client's session.
            before = b""
            while True:
                chunk = first.recv(100)
                if not chunk:
                    break
                before += chunk
                assert len(before) < 4096, before
            assert b"raw REPL" not in before, before
            assert second.exec("print('second')") == (b"second\n", b"")
    finally:
        first.close()


# -- reboots and power -------------------------------------------------------------------------

def test_ctrl_d_in_raw_repl_reboots_and_runs_main_again(make_mcu):
    board = make_mcu()
    first_pid = board.pid
    with RawReplClient(board.serial_url) as client:
        client.enter_raw_repl()
        position = board.console.total
        client.soft_reset()
        assert board.wait_console(b"firmware up", position, timeout=BOOT_TIMEOUT_S)
    assert board.boots == 2
    assert board.pid != first_pid and not pid_alive(first_pid)
    assert board.last_exit == 0


def test_interpreter_crash_reboots_after_restart_delay(make_mcu, tmp_path):
    marker = tmp_path / "flash0" / "boots.txt"
    # $PPID of the shell os.system starts is the interpreter: this is a hard crash of the board.
    firmware = ("f = open('boots.txt', 'a'); f.write('x'); f.close()\n"
                "import os\nos.system('kill -9 $PPID')\n")
    board = make_mcu(firmware, wait_for=None, restart_delay=0.05)
    assert board.wait_boots(3, timeout=BOOT_TIMEOUT_S)
    assert wait_until(lambda: marker.exists() and len(marker.read_text()) >= 2, 5)
    assert board.last_exit == -9


def test_sys_exit_from_the_repl_reboots(make_mcu):
    board = make_mcu()
    with RawReplClient(board.serial_url) as client:
        client.enter_raw_repl()
        client.port.write(b"import sys\nsys.exit(5)\x04")
        assert board.wait_boots(2, timeout=BOOT_TIMEOUT_S)
    assert board.last_exit == 5


def test_sys_exit_in_main_drops_to_the_repl(make_mcu):
    # `-i` semantics: main.py ending for any reason, SystemExit included, leaves the REPL running.
    board = make_mcu("print('firmware up')\nimport sys\nsys.exit(1)\n")
    assert board.wait_console(b">>> ", timeout=5)
    time.sleep(0.3)
    assert board.boots == 1 and board.running
    result = mpremote(board, "exec", "print('idle repl')")   # its 0x03 reaches an idle REPL
    assert result.returncode == 0 and result.stdout.strip() == "idle repl", result.stderr


def test_reset_kills_and_reboots(make_mcu):
    board = make_mcu()
    old_pid = board.pid
    position = board.console.total
    board.reset()
    assert board.boots == 2 and board.running
    assert not pid_alive(old_pid)
    assert board.wait_console(b"firmware up", position, timeout=BOOT_TIMEOUT_S)


def test_power_off_stays_off_until_power_on(make_mcu):
    board = make_mcu(restart_delay=0.05)
    pid = board.pid
    board.power_off()
    assert not board.running and board.pid is None and not pid_alive(pid)
    time.sleep(0.3)
    assert board.boots == 1 and not board.running
    with pytest.raises(BoardError):
        board.reset()
    board.power_on()
    assert board.boots == 2 and board.wait_boots(2, 5)


def test_on_boot_callbacks_get_the_boot_number(make_mcu):
    board = make_mcu()
    seen = []
    board.on_boot.append(lambda b, n: seen.append(n))
    board.reset()
    board.reset()
    assert seen == [2, 3]


# -- the flash directory -----------------------------------------------------------------------

def test_file_written_by_firmware_lands_in_flash_dir(make_mcu, tmp_path):
    firmware = ("with open('log.txt', 'w') as f:\n    f.write('written on the board')\n"
                "print('firmware up')\n")
    make_mcu(firmware)
    assert (tmp_path / "flash0" / "log.txt").read_text() == "written on the board"


def test_firmware_imports_modules_from_flash_lib(make_mcu, tmp_path):
    lib = tmp_path / "flash0" / "lib"
    lib.mkdir(parents=True)
    (lib / "sensor.py").write_text("def read():\n    return 17\n")
    board = make_mcu("import sensor\nprint('firmware up', sensor.read())\n")
    assert board.wait_console(b"firmware up 17", timeout=5)


# -- mpremote, the official host tool ----------------------------------------------------------

def test_mpremote_exec(make_mcu):
    board = make_mcu()
    result = mpremote(board, "exec", "print(6*7)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"


def test_mpremote_cp_writes_flash(make_mcu, tmp_path):
    board = make_mcu()
    local = tmp_path / "model.bin"
    payload = bytes(range(256)) * 16 + b"\x00\x03\x04\r\n"
    local.write_bytes(payload)
    result = mpremote(board, "cp", str(local), ":model.bin")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "flash0" / "model.bin").read_bytes() == payload
    listing = mpremote(board, "ls")
    assert "model.bin" in listing.stdout


# -- console output with nobody listening -------------------------------------------------------

def test_output_without_a_client_never_blocks_the_firmware(make_mcu, tmp_path):
    console_log = tmp_path / "console.log"
    firmware = ("line = 'x' * 1000\nfor i in range(3000):\n    print(line)\n"
                "open('done.txt', 'w').close()\nprint('firmware up')\n")
    board = make_mcu(firmware, wait_for=None, console_log=str(console_log))
    assert wait_until(lambda: (tmp_path / "flash0" / "done.txt").exists(), 30)
    assert board.wait_console(b"firmware up", timeout=5)
    assert len(board.console.since(0)) <= McuBoard.CONSOLE_KEEP_BYTES
    assert wait_until(lambda: console_log.stat().st_size >= 3000 * 1001, 5)


# -- stop() releases everything ----------------------------------------------------------------

def open_fd_count():
    return len(os.listdir("/proc/self/fd"))


def board_threads():
    return [t for t in threading.enumerate() if t.name.startswith("simboard-")]


def test_stop_releases_process_threads_port_and_fds(tmp_path):
    fds_before = open_fd_count()
    write_firmware(str(tmp_path), "print('firmware up')\nimport time\nwhile True:\n    time.sleep_ms(20)\n")
    board = McuBoard("solo", str(tmp_path), 64 * 1024, console_log=str(tmp_path / "c.log"))
    board.start()
    with RawReplClient(board.serial_url):
        assert wait_until(lambda: board.client_connected, 5)
        pid = board.pid
        board.stop()
    assert not pid_alive(pid)
    assert not board_threads()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", board.serial_port), timeout=2).close()
    assert open_fd_count() == fds_before
    board.stop()   # a second stop is harmless
    with pytest.raises(BoardError):
        board.start()


def test_taken_serial_port_is_a_board_error_and_leaks_nothing(tmp_path):
    write_firmware(str(tmp_path), "print('firmware up')\n")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        fds_before = open_fd_count()
        board = McuBoard("clash", str(tmp_path), 64 * 1024, serial_port=squatter.getsockname()[1])
        with pytest.raises(BoardError):
            board.start()
        board.stop()
        assert open_fd_count() == fds_before and not board_threads()


def test_missing_flash_dir_is_a_board_error(tmp_path):
    board = McuBoard("ghost", str(tmp_path / "nope"), 64 * 1024)
    with pytest.raises(BoardError):
        board.start()


# -- LinuxBoard ----------------------------------------------------------------------------------

# Records its pid and exits after a moment, like an agent that crashes.
SHORT_LIVED_AGENT = """\
import os, time
with open('pids.txt', 'a') as f:
    f.write('%d\\n' % os.getpid())
print('agent up', flush=True)
time.sleep(0.1)
"""

# Forks a helper (as an agent starting an inference worker would) and runs forever.
FORKING_AGENT = """\
import os, subprocess, sys, time
helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
with open('pids.txt', 'w') as f:
    f.write('%d %d\\n' % (os.getpid(), helper.pid))
print('agent up')
time.sleep(600)
"""


def read_pids(path):
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_linux_board_restarts_an_agent_that_exits(make_linux, tmp_path):
    log = tmp_path / "agent.log"
    board = make_linux([sys.executable, "-c", SHORT_LIVED_AGENT], console_log=str(log),
                       restart_delay=0.05)
    assert board.wait_boots(3, timeout=BOOT_TIMEOUT_S)
    pids = tmp_path / "sd0" / "pids.txt"
    assert wait_until(lambda: len(set(read_pids(pids))) >= 3, 5)
    assert log.read_text().count("agent up") >= 2
    board.stop()
    assert not any(pid_alive(p) for p in read_pids(pids))


def test_linux_board_stop_kills_the_agent_and_what_it_forked(make_linux, tmp_path):
    board = make_linux([sys.executable, "-c", FORKING_AGENT])
    pids = tmp_path / "sd0" / "pids.txt"
    assert wait_until(lambda: len(read_pids(pids)) == 2, 10)
    agent, helper = read_pids(pids)
    assert board.pid == agent and pid_alive(helper)
    board.stop()
    assert not pid_alive(agent) and not pid_alive(helper)
    assert not board.running and board.boots == 1


def test_linux_board_reset_and_power_off(make_linux, tmp_path):
    board = make_linux([sys.executable, "-c", FORKING_AGENT], restart_delay=0.05)
    pids = tmp_path / "sd0" / "pids.txt"
    assert wait_until(lambda: len(read_pids(pids)) == 2, 10)
    first_agent, first_helper = read_pids(pids)
    board.reset()
    assert board.boots == 2 and not pid_alive(first_agent) and not pid_alive(first_helper)
    assert wait_until(lambda: read_pids(pids) and read_pids(pids)[0] == board.pid, 10)
    agent, helper = read_pids(pids)
    board.power_off()
    time.sleep(0.3)
    assert not board.running and board.boots == 2
    assert not pid_alive(agent) and not pid_alive(helper)


FIRMWARE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "firmware")
BOARDS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "boards")


def _watchdog_firmware(flash, feed_ms):
    os.makedirs(os.path.join(flash, "boards"), exist_ok=True)
    for name in image.board_modules("micropython", simulated=True):
        with open(os.path.join(BOARDS_DIR, name)) as src, open(os.path.join(flash, "boards", name), "w") as dst:
            dst.write(src.read())
    with open(os.path.join(FIRMWARE_DIR, "watchdog_feeder.py")) as f:
        source = f.read()
    with open(os.path.join(flash, "feed_ms.txt"), "w") as f:
        f.write(str(feed_ms))
    return source


def test_mcu_board_watchdog_spares_firmware_that_feeds_it(make_mcu, tmp_path):
    board = make_mcu(_watchdog_firmware(str(tmp_path / "flash0"), 60000), wait_for=b"armed: 400")
    assert b"reset cause: power" in board.console.since(0)
    time.sleep(1.5)
    assert board.watchdog_resets == 0 and board.boots == 1 and board.watchdog.feeds > 10


def test_mcu_board_watchdog_resets_firmware_that_stops_feeding_it(make_mcu, tmp_path):
    board = make_mcu(_watchdog_firmware(str(tmp_path / "flash0"), 300), wait_for=b"armed: 400", restart_delay=0.05)
    started = time.monotonic()
    assert wait_until(lambda: board.watchdog_resets >= 1, 5)
    # Fed for 300 ms, then reset once the 400 ms timeout ran out.
    assert time.monotonic() - started < 0.3 + 0.4 + 0.5
    assert board.wait_console(b"reset cause: watchdog", timeout=BOOT_TIMEOUT_S)


def test_linux_board_plays_systemd_watchdog_for_its_service(make_linux, tmp_path):
    service = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "watchdog_service.py")
    log = tmp_path / "console.log"
    board = make_linux([sys.executable, service, "300"], watchdog_s=0.5, console_log=str(log))
    assert wait_until(lambda: board.watchdog_resets >= 1, 5), "the service was never reset"
    assert wait_until(lambda: b"reset cause: watchdog" in log.read_bytes(), 5), log.read_text()
    text = log.read_text()
    assert "reset cause: power" in text and "armed: 500" in text, text
    # The reset cleared the line's state; the service's next boot tells it ready and feeds again.
    assert wait_until(lambda: board.watchdog.ready and board.watchdog.feeds > 0, 5)
