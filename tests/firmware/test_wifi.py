# Joining Wi-Fi (boards/wifi.py through hal_micropython's net_up) against tests/firmware/fakenet's
# fake `network` module: an access point that answers after some polls, refuses a wrong
# password, is missing, never answers, or drops a joined station. Under CPython and MicroPython.
import sys

try:
    import asyncio
except ImportError:
    asyncio = None

from paths import repo_path

sys.path.insert(0, repo_path("tests", "firmware", "fakenet"))
import network  # noqa: E402  (the fake: the unix port and CPython have none)

from boards.hal_micropython import MicroPythonHal  # noqa: E402
from clock_probe import Ticker, ticks_diff, ticks_ms  # noqa: E402

PROFILE = {"name": "rpi-pico-w"}
# Short enough for a unit test: joins of at most 400 ms, polled every 4 ms, 40..640 ms between
# failed joins (a board's default: 20 s, 200 ms, 2..32 s).
JOIN_MS = 400


def _cfg(ssid, password, country=None):
    return {"ssid": ssid, "password": password, "country": country, "join_ms": JOIN_MS}


def _hal():
    return MicroPythonHal(PROFILE)


def _joins():
    return [c for c in network.calls if c[0] == "connect"]



async def _fails(hal, cfg):
    try:
        await hal.net_up(cfg, "pico-1")
    except OSError as e:
        return str(e)
    raise AssertionError("the join did not fail")


async def test_joins_after_some_polls_with_country_and_hostname_set_first():
    network.setup(ssid="lab", password="s3cret-pass", polls=50)   # ~200 ms of polls
    hal = _hal()
    ticker = Ticker()
    ticker.start()
    ip = await hal.net_up(_cfg("lab", "s3cret-pass", "DE"), "pico-1")
    ticker.stop()
    assert ip == "192.168.4.20", ip
    names = [c[0] for c in network.calls]
    # The regulatory domain and host name go before the radio starts; then one join.
    assert names.index("country") < names.index("active") and names.index("hostname") < names.index("active"), names
    assert ("country", "DE") in network.calls and ("hostname", "pico-1") in network.calls
    assert _joins() == [("connect", "lab")]
    # The join polled between sleeps: the event loop ran other tasks meanwhile.
    assert ticker.ticks >= 10, ticker.ticks
    # The join's code left the heap with the join; the radio stays in the HAL.
    assert "boards.wifi" not in sys.modules and hal._wifi[0] is network.station
    # Up already: nothing more is asked of the radio.
    before = len(network.calls)
    assert await hal.net_up(_cfg("lab", "s3cret-pass"), "pico-1") is None
    assert len(network.calls) == before


async def test_open_network_and_no_settings():
    network.setup(ssid="cafe", password="", polls=1)
    hal = _hal()
    assert await hal.net_up(None, "pico-1") is None          # no "wifi" in config.json: a wired board
    assert network.calls == []
    assert await hal.net_up(_cfg("cafe", ""), "pico-1") == "192.168.4.20"


async def test_a_port_without_network_leaves_the_network_to_its_host():
    fake = sys.path.pop(0)
    sys.modules.pop("network", None)
    try:
        hal = _hal()
        assert await hal.net_up(_cfg("lab", ""), "pico-1") is None and hal._wifi is False
        assert await hal.net_up(_cfg("lab", ""), "pico-1") is None
        assert "network" not in sys.modules and "boards.wifi" not in sys.modules
    finally:
        sys.path.insert(0, fake)
        sys.modules["network"] = network


async def test_wrong_password_is_named_and_joins_are_spaced_out_until_it_is_right():
    network.setup(ssid="lab", password="right-password", polls=2)
    hal = _hal()
    cfg = _cfg("lab", "wrong-password")
    msg = await _fails(hal, cfg)
    assert "wrong password" in msg and "'lab'" in msg and "right-password" not in msg, msg
    # The next join waits the backoff first; the one after twice as long.
    for wait_ms in (40, 80):
        assert hal._wifi[1] == wait_ms and ("next join in %d ms" % wait_ms) in msg, (hal._wifi, msg)
        started = ticks_ms()
        msg = await _fails(hal, cfg)
        took = ticks_diff(ticks_ms(), started)
        assert "wrong password" in msg and took >= wait_ms, (took, msg)
    assert len(_joins()) == 3
    # Each join ended the last one first (an ESP32 refuses connect() while it still retries).
    assert network.calls[-1] == ("disconnect", None)
    network.ap["password"] = "wrong-password"   # the AP's password changed to what the board has
    assert await hal.net_up(cfg, "pico-1") == "192.168.4.20"
    assert hal._wifi[1] == 0 and hal._wifi[2] is None


async def test_missing_ap_and_silent_ap_are_named():
    network.setup(ssid="lab", password="", polls=2)
    hal = _hal()
    msg = await _fails(hal, _cfg("elsewhere", ""))
    assert "no AP found" in msg and "status -2" in msg, msg
    network.setup(ssid="lab", password="", polls=10 ** 6)
    hal = _hal()
    started = ticks_ms()
    msg = await _fails(hal, _cfg("lab", ""))
    took = ticks_diff(ticks_ms(), started)
    assert "not joined after 400 ms, connecting" in msg, msg
    assert JOIN_MS <= took < JOIN_MS + 1000, took


async def test_a_dropped_network_is_joined_again():
    network.setup(ssid="lab", password="pass-word-1", polls=2)
    hal = _hal()
    cfg = _cfg("lab", "pass-word-1")
    assert await hal.net_up(cfg, "pico-1") == "192.168.4.20"
    network.drop()
    # The link's reconnect asks again: the same radio joins once more.
    assert await hal.net_up(cfg, "pico-1") == "192.168.4.20"
    assert len(_joins()) == 2 and [c for c in network.calls if c[0] == "WLAN"] == [("WLAN", network.STA_IF)]
    # Off the air for longer: failures, then back.
    network.drop()
    network.ap["on"] = False
    assert "no AP found" in await _fails(hal, cfg)
    network.ap["on"] = True
    assert await hal.net_up(cfg, "pico-1") == "192.168.4.20"


class _Child:
    beats = 0

    def beat(self):
        self.beats += 1


def _lines():
    from firmware import console
    return [console.slots[(console.first + i) % len(console.slots)] for i in range(console.count)]


async def test_the_node_link_joins_first_and_names_a_network_it_cannot_join():
    from firmware import config, console
    try:
        from firmware.node import Node
    except MemoryError:
        from unit import Skip
        raise Skip("the whole node module does not load beside the tests at this heap")
    network.setup(ssid="lab", password="pass-word-1", polls=2, on=False)
    cfg = config.parse({"node": "pico-1", "board": "rpi-pico-w", "data_dir": "/tmp/edgefleet-wifi-node",
                        "profile": {"name": "rpi-pico-w", "runtime": "micropython"},
                        "broker": {"host": "127.0.0.1", "port": 1},   # nothing listens there
                        "wifi": _cfg("lab", "pass-word-1")})
    console.slots, console.first, console.count = [None] * 32, 0, 0
    node = Node(cfg, _hal())
    child = _Child()
    link = asyncio.create_task(node.keep_link(child))
    try:
        await asyncio.sleep(0.3)
        lines = _lines()
        assert any("broker 127.0.0.1:1 unreachable (no network: Wi-Fi 'lab': no AP found (status -2)" in l
                   for l in lines), lines
        assert not any("ECONNREFUSED" in l or "refused" in l for l in lines), lines
        # The AP comes on the air: the next try joins, then goes on to the broker.
        network.ap["on"] = True
        for _ in range(100):
            await asyncio.sleep(0.05)
            if any("unreachable (no network" not in l and "unreachable" in l for l in _lines()):
                break
        lines = _lines()
        assert any(l.endswith("network up, address 192.168.4.20") for l in lines), lines
        # The broker's own refusal, now that the network is up.
        assert any("broker 127.0.0.1:1 unreachable" in l and "no network" not in l for l in lines), lines
        assert child.beats >= 3 and not node.online()
    finally:
        link.cancel()
        console.slots, console.count = None, 0
