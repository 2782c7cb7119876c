"""The watchdog of a simulated board, enforced for real.

A board process talks to its `WatchdogLine` the way a Linux service talks to systemd: datagrams
of `KEY=VALUE` lines on the unix socket named by $NOTIFY_SOCKET.

    READY=1              the node finished booting (systemd Type=notify)
    WATCHDOG=1           a feed (sd_notify's keep-alive; a kick of machine.WDT on an MCU)
    WATCHDOG_USEC=N      (re)arm with an N microsecond timeout (systemd's WatchdogSec)
    WDT_START=MS         arm with an MS millisecond timeout (machine.WDT(timeout=MS))

Once armed, a board that is not fed within the timeout is reset by the harness: the process
group is SIGKILLed and booted again, as a hardware watchdog or systemd's Restart=on-watchdog
would, and the next boot is told its reset cause through $EDGEFLEET_SIM_RESET_CAUSE (the reset
cause register a real chip has). A reset disarms an MCU's watchdog until the firmware arms it
again; a service's WatchdogSec is armed from each start.
"""
import logging
import os
import socket
import tempfile
import threading
import time

log = logging.getLogger(__name__)

POLL_S = 0.02


class WatchdogLine:
    def __init__(self, name, on_expire):
        self.name = name
        self.on_expire = on_expire
        self._dir = tempfile.mkdtemp(prefix="edgefleet-wdt-")
        self.path = os.path.join(self._dir, "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(POLL_S)
        self._lock = threading.Lock()
        self.timeout_s = None
        self.last_feed = None
        self.ready = False
        self.feeds = 0
        self.expiries = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="simboard-%s-watchdog" % name, daemon=True)
        self._thread.start()

    def env(self, service_timeout_s=None):
        env = {"NOTIFY_SOCKET": self.path}
        if service_timeout_s:
            env["WATCHDOG_USEC"] = str(int(service_timeout_s * 1e6))
        return env

    def new_boot(self, service_timeout_s=None):
        """A reset: what the old process sent is void; a service's watchdog runs from its start."""
        with self._lock:
            while True:
                try:
                    self._sock.recv(4096, socket.MSG_DONTWAIT)
                except (BlockingIOError, socket.timeout, OSError):
                    break
            self.ready = False
            self.timeout_s = service_timeout_s
            self.last_feed = time.monotonic()

    def close(self):
        self._stop = True
        self._thread.join(2.0)
        self._sock.close()
        try:
            os.unlink(self.path)
            os.rmdir(self._dir)
        except OSError:
            pass

    def _run(self):
        while not self._stop:
            try:
                data = self._sock.recv(4096)
            except socket.timeout:
                data = None
            except OSError:
                return
            expired = False
            with self._lock:
                now = time.monotonic()
                if data:
                    self._handle(data, now)
                if self.timeout_s is not None and now - self.last_feed > self.timeout_s:
                    log.info("board %s: watchdog not fed for %.1f s; resetting", self.name, now - self.last_feed)
                    self.timeout_s = None
                    self.expiries += 1
                    expired = True
            if expired:
                try:
                    self.on_expire()
                except Exception:
                    log.exception("board %s: watchdog reset failed", self.name)

    def _handle(self, data, now):
        for line in data.decode("utf-8", "replace").split("\n"):
            key, _, value = line.partition("=")
            try:
                if key == "READY" and value == "1":
                    self.ready = True
                elif key == "WATCHDOG" and value == "1":
                    self.last_feed = now
                    self.feeds += 1
                elif key == "WATCHDOG_USEC":
                    self.timeout_s = int(value) / 1e6
                    self.last_feed = now
                elif key == "WDT_START":
                    self.timeout_s = int(value) / 1000.0
                    self.last_feed = now
            except ValueError:
                log.warning("board %s: bad watchdog line %r", self.name, line)
