"""The serial link to a MicroPython board's REPL: the few primitives every flashing operation
is built on.

PORT is anything pyserial's serial_for_url() opens: a device path (/dev/ttyACM0, /dev/ttyUSB0)
or a URL (`socket://127.0.0.1:PORT`, the UART of a simulated board from controller/sim/simboard.py).

The primitives:
- enter_raw_repl(): Ctrl-C twice (the running program, and a program that catches one
  KeyboardInterrupt), then Ctrl-A, and wait for the raw REPL banner; retried while the board
  may still be booting. There is no soft reset on the way in: the unix port (the simulated
  boards) exits on one, and copying files does not need a fresh heap.
- exec(code): run code in the raw REPL and return what it printed; a traceback raises
  ReplExecError. The code goes in raw-paste mode when the board answers `R\\x01` to `\\x05A\\x01`:
  the board grants a window of bytes up front and one more window each time it sends `\\x01`, so
  a board with a small UART buffer is never overrun. A board without raw-paste (MicroPython
  before 1.14) gets the classic raw REPL for the rest of the session: the code in 256-byte
  pieces, paced, then Ctrl-D.
- exit_raw_repl(), soft_reset(): back to the friendly REPL, then Ctrl-D there, which makes a
  board soft-reboot and run main.py (the unix port exits instead, and the simulated board's
  harness boots it again, which amounts to the same).

Waiting is an idle timeout: every byte from the board restarts it, so a long exec that keeps
answering never times out and a silent board is reported after `timeout` seconds.
`sent` and `received` count the bytes that crossed the link.
"""
import re
import select
import struct
import time

import serial

from ..errors import FlashError, SerialUnreachable

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"
FRIENDLY_PROMPT = b">>> "
CTRL_A, CTRL_B, CTRL_C, CTRL_D = b"\x01", b"\x02", b"\x03", b"\x04"
RAW_PASTE_REQUEST = b"\x05A\x01"
CLASSIC_PIECE_BYTES = 256
CLASSIC_PAUSE_S = 0.01
# An answer may stream for longer than the idle timeout (a big file read back), but not for ever.
TOTAL_FACTOR = 30


class LinkLost(FlashError):
    """The serial connection itself failed: the device went away or the socket closed."""


class NoAnswer(FlashError):
    """The board sent nothing for the idle timeout while something was expected."""


class ReplExecError(FlashError):
    """Code run on the board raised: `stderr` is its traceback, `errno` the OSError number in it."""

    def __init__(self, message, port=None, path=None, stderr=""):
        super().__init__(message, port, path)
        self.stderr = stderr
        found = re.search(r"OSError: \[Errno (\d+)\]", stderr) or re.search(r"OSError: (\d+)", stderr)
        self.errno = int(found.group(1)) if found else None


class ReplLink:
    """One open serial connection to a board's REPL."""

    def __init__(self, port, baudrate=115200, timeout=10.0):
        self.port = port
        self.timeout = timeout
        self.raw_paste = None      # unknown until the board answers the first raw-paste request
        self.sent = 0
        self.received = 0
        self._buffer = bytearray()
        try:
            self._serial = serial.serial_for_url(port, baudrate=baudrate, timeout=0,
                                                 write_timeout=timeout)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise SerialUnreachable("cannot open %s: %s" % (port, exc), port) from exc
        try:
            self._fd = self._serial.fileno()
        except (AttributeError, NotImplementedError, serial.SerialException):
            self._fd = None        # URL handlers without a file descriptor are polled instead

    def close(self):
        self._serial.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- bytes in and out ------------------------------------------------------------------

    def write(self, data):
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise LinkLost("lost the link to %s while sending: %s" % (self.port, exc), self.port) from exc
        self.sent += len(data)

    def _fill(self, wait_s):
        """Move what the board sent into the buffer, waiting up to wait_s for the first byte."""
        try:
            data = self._serial.read(65536)
            if not data and wait_s > 0:
                if self._fd is not None:
                    select.select([self._fd], [], [], wait_s)
                else:
                    time.sleep(min(wait_s, 0.002))
                data = self._serial.read(65536)
        except (serial.SerialException, OSError) as exc:
            raise LinkLost("lost the link to %s: %s" % (self.port, exc), self.port) from exc
        self.received += len(data)
        self._buffer += data
        return len(data)

    def read_until(self, ending, what, timeout=None, total=None):
        """Bytes up to and including `ending`; NoAnswer naming `what` after `timeout` idle seconds,
        or after `total` seconds however much else arrived (default TOTAL_FACTOR x timeout): a
        board that went back to running its node prints for ever and never sends `ending`."""
        timeout = self.timeout if timeout is None else timeout
        total = timeout * TOTAL_FACTOR if total is None else total
        deadline = time.monotonic() + timeout
        give_up = time.monotonic() + total
        start = 0
        while True:
            found = self._buffer.find(ending, start)
            if found >= 0:
                end = found + len(ending)
                data = bytes(self._buffer[:end])
                del self._buffer[:end]
                return data
            start = max(0, len(self._buffer) - len(ending) + 1)
            now = time.monotonic()
            remaining = min(deadline, give_up) - now
            if remaining <= 0:
                tail = bytes(self._buffer[-200:])
                if now >= give_up:
                    raise NoAnswer("the board on %s did not answer: no %s within %.0f s of output (last bytes: %r)"
                                   % (self.port, what, total, tail), self.port)
                raise NoAnswer("the board on %s stopped answering: no %s after %.0f s (last bytes: %r)"
                                 % (self.port, what, timeout, tail), self.port)
            if self._fill(min(remaining, 0.5)):
                deadline = time.monotonic() + timeout

    def read_exactly(self, count, what, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while len(self._buffer) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoAnswer("the board on %s stopped answering: no %s after %.0f s"
                               % (self.port, what, timeout), self.port)
            self._fill(min(remaining, 0.5))
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def _discard_input(self):
        while self._fill(0):
            pass
        self._buffer.clear()

    # -- REPL primitives -------------------------------------------------------------------

    def enter_raw_repl(self, attempts=3):
        # A board still booting may hold a Ctrl-C back for a moment: ask again, within the timeout.
        attempt_timeout = max(1.0, self.timeout / attempts)
        for _ in range(attempts):
            self.write(b"\r" + CTRL_C + CTRL_C)
            time.sleep(0.05)
            self._discard_input()
            self.write(b"\r" + CTRL_A)
            try:
                # The banner follows Ctrl-A at once: a board still printing its node's log
                # after that ignored the keys, and the next attempt sends them again.
                self.read_until(RAW_BANNER, "raw REPL banner", attempt_timeout, total=attempt_timeout)
                return
            except NoAnswer:
                pass
        raise NoAnswer("no MicroPython REPL answers on %s (tried %d times over %.0f s): is it a "
                         "MicroPython board, and is no other program holding the port?"
                         % (self.port, attempts, attempts * attempt_timeout), self.port)

    def exec(self, code, timeout=None, path=None):
        """Run `code` at the raw REPL prompt; returns its stdout as bytes.

        `path` is the file on the board the code is about, for the error a failure raises.
        """
        data = code.encode() if isinstance(code, str) else code
        if self.raw_paste is not False:
            self.write(RAW_PASTE_REQUEST)
            answer = self.read_exactly(2, "answer to the raw-paste request", timeout)
            if answer == b"R\x01":
                self.raw_paste = True
                self._paste(data, timeout)
            else:
                self.raw_paste = False
                if answer != b"R\x00":
                    # A board that predates raw-paste took the request as code and Ctrl-A,
                    # which restarts its raw REPL: wait for that prompt again.
                    self._buffer[0:0] = answer
                    self.read_until(RAW_BANNER, "raw REPL banner", timeout)
        if self.raw_paste is False:
            self._classic(data, timeout)
        out = self.read_until(CTRL_D, "end of output", timeout)[:-1]
        err = self.read_until(CTRL_D, "end of error output", timeout)[:-1]
        self.read_until(b">", "raw REPL prompt", timeout)
        if err:
            text = err.decode("utf-8", "replace")
            last = text.strip().splitlines()[-1] if text.strip() else text
            raise ReplExecError("code run on the board on %s failed: %s" % (self.port, last),
                                self.port, path, text)
        return out

    def _paste(self, data, timeout):
        window = struct.unpack("<H", self.read_exactly(2, "raw-paste window size", timeout))[0]
        allowed = window
        sent = 0
        while sent < len(data):
            while allowed == 0 or self._buffer or self._fill(0):
                flow = self.read_exactly(1, "raw-paste flow control", timeout)
                if flow == CTRL_A:
                    allowed += window
                elif flow == CTRL_D:
                    # The board stopped reading (it hit an interrupt in the data): acknowledge
                    # and let its output say why.
                    self.write(CTRL_D)
                    return
                else:
                    raise FlashError("unexpected byte %r from the board on %s during raw paste"
                                     % (flow, self.port), self.port)
            piece = data[sent:sent + allowed]
            self.write(piece)
            sent += len(piece)
            allowed -= len(piece)
        self.write(CTRL_D)
        self.read_until(CTRL_D, "end-of-code acknowledgement", timeout)

    def _classic(self, data, timeout):
        for start in range(0, len(data), CLASSIC_PIECE_BYTES):
            self.write(data[start:start + CLASSIC_PIECE_BYTES])
            time.sleep(CLASSIC_PAUSE_S)
        self.write(CTRL_D)
        answer = self.read_exactly(2, "OK from the raw REPL", timeout)
        if answer != b"OK":
            raise FlashError("the board on %s refused the code: %r" % (self.port, answer), self.port)

    def exit_raw_repl(self):
        self.write(b"\r" + CTRL_B)

    def soft_reset(self, timeout=5.0):
        """Leave the raw REPL and soft-reboot the board, which then runs main.py."""
        self.exit_raw_repl()
        self.read_until(FRIENDLY_PROMPT, "friendly REPL prompt", timeout)
        self.write(CTRL_D)
