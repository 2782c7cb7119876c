"""Simulated boards, so a whole fleet can run on one machine.

`McuBoard` is a MicroPython microcontroller: the real MicroPython unix interpreter, held to the
board's heap, running `main.py` from a flash directory, with its console on a pty that a TCP
endpoint exposes as the board's UART (`socket://127.0.0.1:PORT`, which pyserial and mpremote open).

`LinuxBoard` is a Pi-class board: a CPython process (the node agent) in a working directory that
plays the SD card, supervised like a systemd service.

Both are a `SupervisedProcess`: a process that "reboots" whenever it exits, until powered off.
"""
import functools
import logging
import os
import platform
import pty
import select
import shutil
import signal
import socket
import subprocess
import termios
import threading
import time
import tty

from ..errors import BoardError
from ..extras import micropython_binary, require_micropython  # noqa: F401 (micropython_binary: simfleet's)
from ..netutil import free_port
from .simwatchdog import WatchdogLine

log = logging.getLogger(__name__)

CTRL_C = 0x03
# The simulated ROM partition's MicroPython side and its erase block (ef_romsim.ERASE_BLOCK).
ROM_SIM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mcu_rom")
ROM_ERASE_BLOCK = 4096

# Architectures number read() differently; the REPL-idle check needs it to recognise an
# interpreter blocked reading its console.
_READ_SYSCALL = {
    "x86_64": 0, "amd64": 0,
    "aarch64": 63, "arm64": 63, "riscv64": 63,
    "armv7l": 3, "armv6l": 3, "i686": 3, "i386": 3,
}.get(platform.machine().lower())


class SupervisedProcess:
    """A process that reboots when it exits: the lifecycle shared by every simulated board.

    The supervisor thread is the only place a board process is reaped. Until it is reaped its PID
    (and its process group, created with start_new_session) cannot be reused, so signalling that
    group always reaches this board's processes and never anyone else's.
    """

    def __init__(self, name, restart_delay=0.2):
        self.name = name
        self.restart_delay = restart_delay
        self.boots = 0
        self.last_exit = None
        self.on_boot = []   # callables(board, boot_number), called after each boot, outside locks
        self.on_exit = []   # callables(board, returncode), called after each exit is reaped
        self._proc = None
        self._unreaped = []   # started processes the supervisor has not reaped yet, oldest first
        self._powered = False
        self._opened = False
        self._closed = False
        # One re-entrant lock guards all board state, the UART input queue of McuBoard included.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._supervisor = None
        # The board's watchdog (simwatchdog.py); a service's WatchdogSec where it has one.
        self.watchdog = None
        self.service_watchdog_s = None
        self.watchdog_resets = 0
        # What the next boot's reset-cause register reads: set by whatever causes the reset.
        self._boot_cause = "power"

    # -- what a concrete board provides ----------------------------------------------------

    def _spawn(self):
        """Start the board's process and return its Popen (started with start_new_session=True)."""
        raise NotImplementedError

    def _open(self):
        """Acquire what outlives single boots (endpoints, logs); called once, by start()."""

    def _close(self):
        """Release what _open acquired, even partly; by stop() once the process is gone."""

    def _before_boot(self):
        """Reset per-boot state, as a reset clears a board's peripherals; runs under the lock."""

    # -- public lifecycle --------------------------------------------------------------------

    @property
    def pid(self):
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def running(self):
        proc = self._proc
        return proc is not None and proc.returncode is None

    @property
    def powered(self):
        return self._powered

    def start(self):
        """Power the board on; the first call also opens its endpoints and log."""
        with self._cond:
            if self._closed:
                raise BoardError("board %s was stopped; make a new one" % self.name, self.name)
            if not self._opened:
                try:
                    self._open()
                    self.watchdog = WatchdogLine(self.name, self._watchdog_expired)
                except BaseException:
                    self._close()
                    raise
                self._opened = True
                self._supervisor = threading.Thread(
                    target=self._supervise, name="simboard-%s-supervisor" % self.name, daemon=True
                )
                self._supervisor.start()
            if self._powered:
                return self
            self._powered = True
            self._boot_cause = "power"
            boot_number = self._boot_locked()
        self._announce_boot(boot_number)
        return self

    power_on = start

    def power_off(self, timeout=10.0):
        """Cut power: SIGKILL the board's processes and stay off until power_on()."""
        with self._cond:
            self._powered = False
            self._halt_locked(timeout)

    def reset(self, timeout=10.0):
        """Hard reset, as the reset pin does: SIGKILL the board's processes and boot again."""
        with self._cond:
            if self._closed or not self._powered:
                raise BoardError("board %s is not powered" % self.name, self.name)
            self._halt_locked(timeout)
            self._boot_cause = "hard_reset"
            boot_number = self._boot_locked()
        self._announce_boot(boot_number)

    def _watchdog_expired(self):
        with self._cond:
            if self._closed or not self._powered or self._proc is None:
                return
            self.watchdog_resets += 1
            self._halt_locked(10.0)
            self._boot_cause = "watchdog"
            boot_number = self._boot_locked()
        self._announce_boot(boot_number)

    def boot_env(self):
        """Environment a board process gets from its hardware: the watchdog line, the reset cause."""
        env = {"EDGEFLEET_SIM_RESET_CAUSE": self._boot_cause}
        if self.watchdog is not None:
            env.update(self.watchdog.env(self.service_watchdog_s))
        return env

    def stop(self, timeout=10.0):
        """Power off and release everything the board holds: process, threads, sockets, fds."""
        with self._cond:
            if self._closed:
                return
            self._powered = False
            self._halt_locked(timeout)
            self._closed = True
            self._cond.notify_all()
        # A callback running on the supervisor thread may stop the board; it ends on its own then.
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout)
        if self._opened:
            self._close()
            if self.watchdog is not None:
                self.watchdog.close()

    def wait_boots(self, count, timeout=10.0):
        """Block until the board has booted `count` times and is running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.boots >= count and self.running, timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- internals ---------------------------------------------------------------------------

    def _boot_locked(self):
        self._before_boot()
        if self.watchdog is not None:
            self.watchdog.new_boot(self.service_watchdog_s)
        try:
            proc = self._spawn()
        except OSError as exc:
            self._powered = False
            raise BoardError("board %s failed to boot: %s" % (self.name, exc), self.name) from exc
        self._proc = proc
        self._unreaped.append(proc)
        self.boots += 1
        self._boot_cause = "soft"   # an exit nobody asked for: the process reset itself
        log.debug("board %s boot %d pid %d", self.name, self.boots, proc.pid)
        self._cond.notify_all()
        return self.boots

    def _halt_locked(self, timeout):
        """Kill the current process and wait until the supervisor has reaped it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._kill_group(proc)
        self._cond.notify_all()
        if not self._cond.wait_for(lambda: proc.returncode is not None, timeout):
            raise BoardError("board %s: pid %d did not die" % (self.name, proc.pid), self.name)

    @staticmethod
    def _kill_group(proc):
        # Only while unreaped: then the group id is still this board's, whatever happened since.
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _wait_group_gone(self, pgid, timeout=5.0):
        deadline = time.monotonic() + timeout
        while _live_group_members(pgid):
            if time.monotonic() > deadline:
                log.warning("board %s: processes of group %d survived SIGKILL", self.name, pgid)
                return
            time.sleep(0.005)

    def _announce_boot(self, boot_number):
        for callback in list(self.on_boot):
            try:
                callback(self, boot_number)
            except Exception:
                log.exception("board %s: on_boot callback failed", self.name)

    def _announce_exit(self, returncode):
        for callback in list(self.on_exit):
            try:
                callback(self, returncode)
            except Exception:
                log.exception("board %s: on_exit callback failed", self.name)

    def _supervise(self):
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._unreaped)
                if not self._unreaped:
                    return
                proc = self._unreaped[0]
            self._reap(proc)
            self._announce_exit(proc.returncode)
            boot_number = self._reboot_after_exit(proc)
            if boot_number:
                self._announce_boot(boot_number)

    def _reap(self, proc):
        try:
            # Wait without reaping: while the zombie holds the PID, the group id is still ours.
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        with self._cond:
            self._kill_group(proc)   # stragglers the board forked go down with it
            self._wait_group_gone(proc.pid)
            proc.wait()
            self._unreaped.remove(proc)
            self.last_exit = proc.returncode
            self._cond.notify_all()

    def _reboot_after_exit(self, proc):
        """After an exit nobody asked for, boot again like a watchdog or systemd would."""
        with self._cond:
            if self._proc is not proc:
                return None   # reset/power_off/stop killed it and take care of what follows
            self._proc = None
            log.info("board %s: process exited with %s; rebooting", self.name, proc.returncode)
            self._cond.wait_for(
                lambda: self._closed or not self._powered or self._proc is not None, self.restart_delay
            )
            if self._closed or not self._powered or self._proc is not None:
                return None
            try:
                return self._boot_locked()
            except BoardError:
                log.exception("board %s: reboot failed; it stays off", self.name)
                return None


def _live_group_members(pgid):
    """PIDs in process group `pgid` that are not zombies."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


@functools.lru_cache(maxsize=None)
def _sigint_ignoring_launcher():
    """`env` that execs the interpreter with SIGINT ignored, or [] where env cannot do that.

    The pip-installed `micropython` is a CPython script that runs MicroPython in-process, and
    CPython's startup installs its own SIGINT handler. Started with SIGINT ignored, CPython leaves
    it alone, so a caught SIGINT always means MicroPython itself is running code.
    """
    env = shutil.which("env")
    if env is None:
        return ()
    probe = subprocess.run([env, "--ignore-signal=INT", "true"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    if probe.returncode != 0:
        log.warning("%s has no --ignore-signal; a Ctrl-C during a board's boot may abort it", env)
        return ()
    return (env, "--ignore-signal=INT")


def sim_machine(profile):
    """What a simulated board of `profile` reports as its machine: ends as the real one does
    (the profile's "machine"), and says it is simulated."""
    return "simulated %s %s" % (profile["name"], profile.get("machine") or "")


class _Console:
    """The last bytes a board wrote to its console, kept bounded, with absolute positions."""

    def __init__(self, keep_bytes):
        self.keep_bytes = keep_bytes
        self.total = 0
        self._tail = bytearray()
        self._cond = threading.Condition()

    def append(self, data):
        with self._cond:
            self._tail += data
            if len(self._tail) > self.keep_bytes:
                del self._tail[: len(self._tail) - self.keep_bytes]
            self.total += len(data)
            self._cond.notify_all()

    def since(self, position):
        with self._cond:
            start = max(0, len(self._tail) - (self.total - position))
            return bytes(self._tail[start:])

    def wait_for(self, needle, position, timeout):
        with self._cond:
            return self._cond.wait_for(lambda: needle in self.since(position), timeout)


class _Pacer:
    """Lets bytes through at a serial line's rate: baud/10 bytes/s, 8N1 framing.

    A small burst allowance stands for the UART FIFO and keeps the pump from waking per byte.
    """

    BURST_BYTES = 32

    def __init__(self, baud):
        self.rate = baud / 10.0
        self._allowance = float(self.BURST_BYTES)
        self._at = time.monotonic()

    def _refill(self):
        now = time.monotonic()
        self._allowance = min(self.BURST_BYTES, self._allowance + (now - self._at) * self.rate)
        self._at = now

    def take(self, wanted):
        """How many of `wanted` bytes may go now; they count as sent."""
        self._refill()
        count = min(wanted, int(self._allowance))
        self._allowance -= count
        return count

    def wait_s(self):
        """Seconds until the next byte may go."""
        self._refill()
        return max(0.0, (1.0 - self._allowance) / self.rate)


class McuBoard(SupervisedProcess):
    """A MicroPython microcontroller: the unix port behind a TCP serial endpoint.

    Serial endpoint: one client at a time; a new connection replaces the current one (the old
    socket is closed), as if another host took over the USB cable, so a client that died without
    closing can never lock a board. The endpoint listens from start() to stop(), also while the
    board is powered off; bytes sent to an unpowered or rebooting board are lost, as on a UART.

    Ctrl-C: while the interpreter runs Python code (main.py, or a REPL command), it has its SIGINT
    handler installed -- that is the unix port's equivalent of enabling the UART interrupt char.
    A 0x03 from the client then becomes SIGINT to the interpreter and is consumed, as a board's
    UART IRQ consumes it. While the REPL waits for input the handler is not installed (SIGINT would
    kill it), so 0x03 is passed on as a character. In between (booting, or leaving an exec) the
    0x03 and the bytes after it wait until one of the two states is reached.

    Link speed: by default bytes cross the endpoint as fast as the loopback carries them. With
    `baud` set, each direction is paced to baud/10 bytes/s (8N1 framing), as a real UART clocks
    them; output the board writes faster than that backs up into the pty, so a chatty board
    blocks on its console as one does on a full TX FIFO.
    """

    CONSOLE_KEEP_BYTES = 64 * 1024
    MAX_PENDING_INPUT = 64 * 1024
    INTERRUPT_SETTLE_S = 0.5     # longest a SIGINT counts as possibly still pending
    INTERRUPT_DEFER_S = 2.0      # longest a 0x03 waits for the interpreter to pick a state
    STATE_POLL_S = 0.02
    CLIENT_SEND_TIMEOUT_S = 5.0
    PACED_OUTPUT_BACKLOG = 4096   # bytes read from the console ahead of a paced link

    def __init__(self, name, flash_dir, heap_bytes, serial_port=None, micropython=None,
                 env=None, console_log=None, restart_delay=0.2, baud=None, netns=None, machine=None,
                 rom_segments=0, rom_segment_bytes=0):
        super().__init__(name, restart_delay)
        # A ROM partition (mcu_rom/ef_romsim.py): rom_segments segments of rom_segment_bytes in a
        # file beside the flash folder, driven through vfs.rom_ioctl as on a real board. None
        # by default: such a board answers a ROM query with "no partition", as most do.
        self.rom_segments = int(rom_segments)
        self.rom_segment_bytes = int(rom_segment_bytes)
        # A network namespace (`ip netns`) the interpreter runs in: its MQTT link then crosses a
        # real interface to reach the broker, as a board on Wi-Fi does. The serial endpoint
        # stays on this host's loopback, as a USB cable stays on the host.
        self.netns = netns
        self.flash_dir = os.path.abspath(flash_dir)
        self.heap_bytes = int(heap_bytes)
        self.serial_port = serial_port or free_port()
        self.micropython = micropython or micropython_binary()
        self.env = dict(env or {})
        # The board it plays, as a real one names itself in sys.implementation._machine (what
        # `edgefleet flash` checks --board against): sim_machine() of its profile.
        if machine:
            self.env["EDGEFLEET_SIM_MACHINE"] = machine
        self.console_log = console_log
        self.console = _Console(self.CONSOLE_KEEP_BYTES)
        self._master = self._slave = None
        self._listener = self._client = None
        self._wake_r = self._wake_w = None
        self._log_file = None
        self._pump_thread = None
        self._pump_stop = False
        self._pending_input = bytearray()
        self._interrupt_waiting_since = None   # when the 0x03 at the head of the input arrived
        self._unsettled_interrupt_at = None    # when a SIGINT went out that may still be pending
        self.baud = baud
        self._rx_pacer = _Pacer(baud) if baud else None   # client -> interpreter
        self._tx_pacer = _Pacer(baud) if baud else None   # interpreter -> client
        self._pending_output = bytearray()

    @property
    def rom_path(self):
        """The file holding the board's ROM partition (None without one)."""
        return self.flash_dir.rstrip("/") + ".romparts" if self.rom_segments else None

    def _ensure_rom(self):
        # Flash leaves the factory erased (all ones); the partition keeps its contents across
        # power cycles like the rest of the flash.
        size = self.rom_segments * self.rom_segment_bytes
        if size % ROM_ERASE_BLOCK:
            raise BoardError("a ROM segment is a whole number of %d-byte erase blocks, not %d bytes"
                             % (ROM_ERASE_BLOCK, self.rom_segment_bytes), self.name)
        if not os.path.exists(self.rom_path) or os.path.getsize(self.rom_path) != size:
            with open(self.rom_path, "wb") as f:
                f.write(b"\xff" * size)

    def program_rom(self, segment, data):
        """Write data at the start of a ROM segment, the rest of it erased, with the board off:
        what a factory programmer (esptool, picotool) does to a new board's partition."""
        if not 0 <= segment < self.rom_segments or len(data) > self.rom_segment_bytes:
            raise BoardError("%d bytes do not fit ROM segment %d of %d x %d bytes"
                             % (len(data), segment, self.rom_segments, self.rom_segment_bytes), self.name)
        self._ensure_rom()
        with open(self.rom_path, "r+b") as f:
            f.seek(segment * self.rom_segment_bytes)
            f.write(data + b"\xff" * (self.rom_segment_bytes - len(data)))

    @property
    def serial_url(self):
        return "socket://127.0.0.1:%d" % self.serial_port

    @property
    def client_connected(self):
        return self._client is not None

    def wait_console(self, needle, position=0, timeout=10.0):
        """True once `needle` (bytes) appears in console output written at or after `position`."""
        return self.console.wait_for(needle, position, timeout)

    # -- lifecycle hooks -----------------------------------------------------------------------

    def _open(self):
        if not self.micropython:
            require_micropython("simulated board %s" % self.name)
        if not os.path.exists(self.micropython):
            raise BoardError("no MicroPython unix port at %s" % self.micropython, self.name)
        if not os.path.isdir(self.flash_dir):
            raise BoardError("flash directory %s does not exist" % self.flash_dir, self.name)
        if self.rom_segments:
            self._ensure_rom()
        self._listener = self._listen()
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self._wake_r, self._wake_w = os.pipe()
        if self.console_log:
            self._log_file = open(self.console_log, "ab", buffering=0)
        self._pump_stop = False
        self._pump_thread = threading.Thread(target=self._pump, name="simboard-%s-uart" % self.name,
                                             daemon=True)
        self._pump_thread.start()

    def _listen(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", self.serial_port))
        except OSError as exc:
            listener.close()
            raise BoardError("serial port %d for board %s is taken: %s"
                             % (self.serial_port, self.name, exc), self.name) from exc
        listener.listen(4)
        listener.setblocking(False)
        return listener

    def _close(self):
        self._pump_stop = True
        if self._pump_thread is not None:
            self._wake_pump()
            self._pump_thread.join(5.0)
            self._pump_thread = None
        self._drop_client()
        for closable in (self._listener, self._log_file):
            if closable is not None:
                closable.close()
        self._listener = self._log_file = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = None

    def _before_boot(self):
        # A reset clears the UART FIFOs: nothing typed at the old interpreter reaches the new one.
        with self._lock:
            self._pending_input.clear()
            self._interrupt_waiting_since = None
            self._unsettled_interrupt_at = None
            termios.tcflush(self._slave, termios.TCIFLUSH)
            # The interpreter changes the tty modes for its REPL and a SIGKILL leaves them changed.
            tty.setraw(self._slave)

    def _spawn(self):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env["MICROPYPATH"] = ":".join([self.flash_dir, os.path.join(self.flash_dir, "lib"), ".frozen"])
        env.update(self.boot_env())
        env.update(self.env)
        entry = "main.py"
        if self.rom_segments:
            # The ROM hardware comes first, then main.py (mcu_rom/ef_simboot.py).
            env["MICROPYPATH"] += ":" + ROM_SIM_DIR
            env["EDGEFLEET_SIM_ROM"] = "%s:%d:%d" % (self.rom_path, self.rom_segments, self.rom_segment_bytes)
            entry = os.path.join(ROM_SIM_DIR, "ef_simboot.py")
        interpreter = [self.micropython, "-X", "heapsize=%d" % self.heap_bytes, "-i", entry]
        argv = list(_sigint_ignoring_launcher()) + interpreter
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
        return subprocess.Popen(argv, cwd=self.flash_dir, env=env, stdin=self._slave,
                                stdout=self._slave, stderr=self._slave, start_new_session=True)

    # -- the UART pump thread ------------------------------------------------------------------

    def _wake_pump(self):
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _pump(self):
        while not self._pump_stop:
            try:
                self._pump_once()
            except Exception:
                # The UART must outlive any one bad event; pausing keeps a repeating one cheap.
                log.exception("board %s: serial pump error", self.name)
                time.sleep(0.1)

    def _pump_once(self):
        readable = self._select()
        if self._wake_r in readable:
            os.read(self._wake_r, 512)
        if self._master in readable:
            self._read_console()
        if self._listener in readable:
            self._accept_client()
        client = self._client
        if client is not None and client in readable:
            self._read_client(client)
        if self._unsettled_interrupt_at is not None:
            self._settle_interrupt()
        if self._pending_input:
            self._feed_interpreter()
        if self._pending_output:
            self._flush_paced_output()

    def _select(self):
        readers = [self._wake_r, self._listener]
        if len(self._pending_output) < self.PACED_OUTPUT_BACKLOG:
            readers.append(self._master)
        if self._client is not None and len(self._pending_input) < self.MAX_PENDING_INPUT:
            readers.append(self._client)
        feed = bool(self._pending_input)
        if self._interrupt_waiting_since is not None:
            writers, timeout = [], self.STATE_POLL_S
        elif self._unsettled_interrupt_at is not None:
            writers, timeout = ([self._master] if feed else []), self.STATE_POLL_S
        else:
            writers, timeout = ([self._master] if feed else []), 1.0
        if feed and self._rx_pacer is not None and self._rx_pacer.wait_s() > 0:
            writers, timeout = [], min(timeout, self._rx_pacer.wait_s())
        if self._pending_output:
            timeout = min(timeout, self._tx_pacer.wait_s())
        readable, _, _ = select.select(readers, writers, [], timeout)
        return readable

    def _read_console(self):
        try:
            data = os.read(self._master, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("board %s: console read failed: %s", self.name, exc)
            return
        if not data:
            return
        self.console.append(data)
        if self._log_file is not None:
            self._log_file.write(data)
        if self._client is not None:
            if self._tx_pacer is not None:
                self._pending_output += data
                self._flush_paced_output()
            else:
                self._send_to_client(data)

    def _flush_paced_output(self):
        if self._client is None:
            self._pending_output.clear()
            return
        count = self._tx_pacer.take(len(self._pending_output))
        if count:
            data = bytes(self._pending_output[:count])
            del self._pending_output[:count]
            self._send_to_client(data)

    def _send_to_client(self, data):
        try:
            self._client.sendall(data)
        except OSError as exc:
            log.info("board %s: serial client dropped (%s)", self.name, exc)
            self._drop_client()

    def _accept_client(self):
        try:
            conn, peer = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if self._client is not None:
            log.info("board %s: serial client %s replaces the previous one", self.name, peer)
        self._drop_client()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(self.CLIENT_SEND_TIMEOUT_S)
        self._client = conn

    def _drop_client(self):
        client, self._client = self._client, None
        self._pending_output.clear()
        if client is not None:
            client.close()

    def _read_client(self, client):
        try:
            data = client.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        with self._lock:
            if self.running:
                self._pending_input += data

    # -- delivering input, and what 0x03 means -------------------------------------------------

    def _feed_interpreter(self):
        with self._lock:
            while self._pending_input:
                if self._pending_input[0] == CTRL_C:
                    if self._rx_pacer is not None and self._rx_pacer.wait_s() > 0:
                        return
                    verdict = self._route_interrupt()
                    if verdict == "wait":
                        return
                    if verdict == "consumed":
                        if self._rx_pacer is not None:
                            self._rx_pacer.take(1)
                        del self._pending_input[0]
                        continue
                    chunk_end = 1
                else:
                    self._settle_interrupt()
                    chunk_end = self._pending_input.find(CTRL_C)
                    if chunk_end < 0:
                        chunk_end = len(self._pending_input)
                if self._rx_pacer is not None:
                    chunk_end = self._rx_pacer.take(chunk_end)
                    if not chunk_end:
                        return
                try:
                    written = os.write(self._master, bytes(self._pending_input[:chunk_end]))
                except (BlockingIOError, InterruptedError):
                    return
                del self._pending_input[:written]

    def _route_interrupt(self):
        """Decide what the 0x03 at the head of the input does: 'consumed', 'forward' or 'wait'."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return "consumed"
        now = time.monotonic()
        if self._interrupt_enabled(proc.pid):
            self._interrupt_waiting_since = None
            if self._unsettled_interrupt_at is None:
                self._unsettled_interrupt_at = now
                os.kill(proc.pid, signal.SIGINT)   # unreaped, under the lock: still our process
            return "consumed"
        if self._reading_console(proc.pid):
            self._interrupt_waiting_since = None
            return "forward"
        if self._interrupt_waiting_since is None:
            self._interrupt_waiting_since = now
        if now - self._interrupt_waiting_since > self.INTERRUPT_DEFER_S:
            self._interrupt_waiting_since = None
            return "forward"
        return "wait"

    def _settle_interrupt(self):
        """Forget the last SIGINT once the interpreter stopped running code, or after a while.

        Until then further 0x03s are swallowed: the unix port exits if a second SIGINT comes
        before it has raised the first as KeyboardInterrupt.
        """
        with self._lock:
            proc = self._proc
            if self._unsettled_interrupt_at is None:
                return
            if (proc is None or proc.returncode is not None
                    or not self._interrupt_enabled(proc.pid)
                    or time.monotonic() - self._unsettled_interrupt_at > self.INTERRUPT_SETTLE_S):
                self._unsettled_interrupt_at = None

    @staticmethod
    def _interrupt_enabled(pid):
        """Whether the interpreter catches SIGINT, i.e. is running Python code right now."""
        try:
            with open("/proc/%d/status" % pid) as status:
                for line in status:
                    if line.startswith("SigCgt:"):
                        return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
        except (OSError, ValueError):
            pass
        return False

    @staticmethod
    def _reading_console(pid):
        """Whether the interpreter is blocked in read() on its stdin: the REPL waiting for input."""
        if _READ_SYSCALL is None:
            return False
        try:
            with open("/proc/%d/syscall" % pid) as syscall:
                fields = syscall.read().split()
        except OSError:
            return False
        return len(fields) >= 2 and fields[0] == str(_READ_SYSCALL) and int(fields[1], 16) == 0


class LinuxBoard(SupervisedProcess):
    """A Pi-class Linux board: a command (the node agent) run like a systemd service.

    `workdir` plays the SD card. The process is restarted `restart_delay` after it exits unless the
    board is powered off or stopped; reset/power_off/stop SIGKILL the whole process group, so
    anything the agent forked goes down with it, as when power is cut.
    """

    def __init__(self, name, command, workdir, env=None, console_log=None, restart_delay=0.2, watchdog_s=None):
        super().__init__(name, restart_delay)
        self.service_watchdog_s = watchdog_s
        self.command = list(command)
        self.workdir = os.path.abspath(workdir)
        self.env = dict(env or {})
        self.console_log = console_log
        self._log_file = None

    def _open(self):
        if not os.path.isdir(self.workdir):
            raise BoardError("working directory %s does not exist" % self.workdir, self.name)
        if self.console_log:
            self._log_file = open(self.console_log, "ab", buffering=0)

    def _close(self):
        if self._log_file is not None:
            self._log_file.close()

    def _spawn(self):
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"   # so the log shows what the agent did up to a power cut
        env.update(self.boot_env())
        env.update(self.env)
        output = self._log_file if self._log_file is not None else subprocess.DEVNULL
        return subprocess.Popen(self.command, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
