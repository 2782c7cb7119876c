# HAL for a Linux board (Raspberry Pi class): readings from /proc and /sys.
# `sysroot` prefixes every path so tests can point it at a fake tree.
import os

from .hal import Hal


class LinuxHal(Hal):
    name = "linux"

    def __init__(self, profile, sysroot="", options=None):
        self.profile = profile
        self.root = sysroot
        self.options = options or {}
        self._last_cpu = self._read_cpu_times()

    def _read(self, path):
        with open(self.root + path) as f:
            return f.read()

    def _read_cpu_times(self):
        try:
            fields = self._read("/proc/stat").split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    def cpu_percent(self):
        now = self._read_cpu_times()
        last, self._last_cpu = self._last_cpu, now
        if now is None or last is None or now[0] <= last[0]:
            return 0.0
        total, idle = now[0] - last[0], now[1] - last[1]
        return round(100.0 * (total - idle) / total, 1)

    def mem(self):
        info = {}
        try:
            for line in self._read("/proc/meminfo").splitlines():
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) * 1024
        except OSError:
            return 0, 0
        return info.get("MemAvailable", info.get("MemFree", 0)), info.get("MemTotal", 0)

    def process_cpu_seconds(self):
        """CPU time this process has used (user + system), from /proc/self/stat."""
        try:
            fields = self._read("/proc/self/stat").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def process_rss(self):
        try:
            return int(self._read("/proc/self/statm").split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            return 0

    def power(self, cpu_pct):
        """Battery from /sys/class/power_supply when a battery (e.g. a UPS HAT) is present."""
        base = "/sys/class/power_supply"
        try:
            supplies = sorted(os.listdir(self.root + base))
        except OSError:
            supplies = []
        for name in supplies:
            try:
                if self._read("%s/%s/type" % (base, name)).strip() != "Battery":
                    continue
                pct = float(self._read("%s/%s/capacity" % (base, name)).strip())
                status = self._read("%s/%s/status" % (base, name)).strip()
            except (OSError, ValueError):
                continue
            src = "mains" if status in ("Charging", "Full") else "battery"
            return {"src": src, "pct": pct, "mw": None}
        return {"src": self.profile.get("power", {}).get("source", "mains"), "pct": None, "mw": None}

    def temperature(self):
        try:
            return round(int(self._read("/sys/class/thermal/thermal_zone0/temp").strip()) / 1000.0, 1)
        except (OSError, ValueError):
            return None

    def throttled(self):
        """True when the firmware reports under-voltage or thermal throttling now (Raspberry Pi)."""
        try:
            value = int(self._read("/sys/devices/platform/soc/soc:firmware/get_throttled").strip(), 16)
        except (OSError, ValueError):
            return False
        return bool(value & 0x6)

    # -- systemd: readiness and watchdog (sd_notify), or /dev/watchdog ---------------------------

    def _sd_notify(self, message):
        path = os.environ.get("NOTIFY_SOCKET")
        if not path:
            return False
        import socket
        if path.startswith("@"):
            path = "\0" + path[1:]   # an abstract socket
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(path)
            sock.send(message.encode())
        except OSError:
            return False
        finally:
            sock.close()
        return True

    def watchdog_start(self, timeout_ms):
        """Called once the node has booted: tells systemd it is ready (Type=notify), then arms
        systemd's WatchdogSec when the unit sets one, else /dev/watchdog if the config names it;
        returns the timeout in force (ms), or None when nothing watches this node."""
        self._sd_notify("READY=1")
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if usec and (not pid or pid == str(os.getpid())):
            self._watchdog = "systemd"
            return int(usec) // 1000
        device = self.options.get("watchdog_device")
        if device:
            self._watchdog = open(device, "wb", buffering=0)
            return timeout_ms
        return None

    def watchdog_feed(self):
        watchdog = getattr(self, "_watchdog", None)
        if watchdog == "systemd":
            self._sd_notify("WATCHDOG=1")
        elif watchdog is not None:
            watchdog.write(b"\0")

    def camera(self):
        """The camera the profile declares ("camera": {"device", "width", "height"}): Picamera2
        where it is installed, else V4L2 through OpenCV (boards/camera_linux.py)."""
        settings = self.profile.get("camera")
        if settings is None:
            raise OSError("the board profile declares no camera")
        from .camera_linux import open_camera
        return open_camera(settings)

    def reboot(self):
        # The node agent runs under systemd with Restart=; exiting is how it restarts itself.
        raise SystemExit(0)
