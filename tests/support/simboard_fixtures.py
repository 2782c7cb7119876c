"""Helpers for tests that drive simulated boards: firmware files and a raw-REPL serial client."""
import os
import time

import pytest
import serial

from edgefleet.controller.sim.simboard import LinuxBoard, McuBoard

BOOT_TIMEOUT_S = 10.0
IO_TIMEOUT_S = 10.0

# Prints a marker, then counts forever; the marker tells a test that main.py is running.
TICKING_MAIN = """\
import time
print("firmware up")
n = 0
while True:
    n += 1
    time.sleep_ms(20)
"""


def write_firmware(flash_dir, source, name="main.py"):
    os.makedirs(flash_dir, exist_ok=True)
    with open(os.path.join(flash_dir, name), "w") as f:
        f.write(source)


def pid_alive(pid):
    """True while `pid` exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class RawReplClient:
    """What a host tool does over the board's UART: interrupt, raw REPL, exec, Ctrl-D."""

    BANNER = b"raw REPL; CTRL-B to exit\r\n>"

    def __init__(self, url, timeout=IO_TIMEOUT_S):
        self.timeout = timeout
        self.port = serial.serial_for_url(url, timeout=0.1)

    def close(self):
        self.port.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read_until(self, ending, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        data = b""
        while not data.endswith(ending):
            if time.monotonic() > deadline:
                raise TimeoutError("waited for %r, got %r" % (ending, data[-300:]))
            data += self.port.read(1)
        return data

    def enter_raw_repl(self):
        self.port.write(b"\r\x03")
        self.port.write(b"\r\x01")
        return self.read_until(self.BANNER)

    def exec(self, code):
        """Run `code` in the raw REPL; returns (stdout, stderr) as bytes."""
        self.port.write(code.encode() + b"\x04")
        self.read_until(b"OK")
        out = self.read_until(b"\x04")[:-1]
        err = self.read_until(b"\x04")[:-1]
        self.read_until(b">")
        return out, err

    def soft_reset(self):
        self.port.write(b"\x04")


@pytest.fixture
def make_mcu(tmp_path):
    """Factory for started McuBoards with a given main.py; every board is stopped afterwards."""
    boards = []

    def make(source=TICKING_MAIN, heap_bytes=128 * 1024, wait_for=b"firmware up", **kwargs):
        flash = tmp_path / ("flash%d" % len(boards))
        write_firmware(str(flash), source)
        board = McuBoard("mcu%d" % len(boards), str(flash), heap_bytes, **kwargs)
        boards.append(board)
        board.start()
        if wait_for is not None:
            assert board.wait_console(wait_for, timeout=BOOT_TIMEOUT_S), board.console.since(0)
        return board

    yield make
    for board in boards:
        board.stop()


@pytest.fixture
def make_linux(tmp_path):
    """Factory for started LinuxBoards; every board is stopped afterwards."""
    boards = []

    def make(command, **kwargs):
        workdir = tmp_path / ("sd%d" % len(boards))
        workdir.mkdir()
        board = LinuxBoard("pi%d" % len(boards), command, str(workdir), **kwargs)
        boards.append(board)
        return board.start()

    yield make
    for board in boards:
        board.stop()
