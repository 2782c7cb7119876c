# A fake `network` module for firmware tests only (the MicroPython unix port has none): one
# access point the test sets up and one station that joins it, reporting as the rp2 port does
# (its status values) and refusing connect() during a join as the esp32 port does. A test puts
# this folder on sys.path before the HAL imports `network`; it never goes on a board.
STA_IF = 0
AP_IF = 1
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_GOT_IP = 3
STAT_CONNECT_FAIL = -1
STAT_NO_AP_FOUND = -2
STAT_WRONG_PASSWORD = -3

# The access point: its SSID and password ("" open), whether it is on the air, and how many
# polls of the station (status()/isconnected()) a join takes before it is decided.
ap = {"ssid": "lab", "password": "", "on": True, "polls": 3}
calls = []       # what the board asked the module, in order: (what, argument)
station = None   # the WLAN(STA_IF) made last


def setup(ssid="lab", password="", polls=3, on=True):
    global station
    ap.update(ssid=ssid, password=password, polls=polls, on=on)
    del calls[:]
    station = None


def drop():
    """The joined station loses its link and keeps retrying on its own, as an esp32 does (it
    then refuses connect() until disconnect() ends the retries); it never gets through alone."""
    if station is not None and station._status == STAT_GOT_IP:
        station._status = STAT_CONNECTING
        station._polls = -10 ** 9


def country(code=None):
    calls.append(("country", code))


def hostname(name=None):
    calls.append(("hostname", name))


class WLAN:
    def __init__(self, interface):
        global station
        calls.append(("WLAN", interface))
        self._active = False
        self._status = STAT_IDLE
        self._polls = 0
        self._join = None
        station = self

    def active(self, on=None):
        if on is not None:
            calls.append(("active", on))
            self._active = bool(on)
        return self._active

    def connect(self, ssid, key=None):
        calls.append(("connect", ssid))
        if not self._active:
            raise OSError("Wifi Not Started")
        if self._status == STAT_CONNECTING:
            raise OSError("Wifi Internal State Error")
        self._join = (ssid, key or "")
        self._status = STAT_CONNECTING
        self._polls = 0

    def disconnect(self):
        calls.append(("disconnect", None))
        self._status = STAT_IDLE

    def _poll(self):
        if self._status != STAT_CONNECTING:
            return
        self._polls += 1
        if self._polls < ap["polls"]:
            return
        if not ap["on"] or self._join[0] != ap["ssid"]:
            self._status = STAT_NO_AP_FOUND
        elif self._join[1] != ap["password"]:
            self._status = STAT_WRONG_PASSWORD
        else:
            self._status = STAT_GOT_IP

    def status(self, param=None):
        self._poll()
        return self._status

    def isconnected(self):
        self._poll()
        return self._status == STAT_GOT_IP

    def ifconfig(self):
        return ("192.168.4.20", "255.255.255.0", "192.168.4.1", "192.168.4.1")

    def config(self, **kwargs):
        calls.append(("config", kwargs))
