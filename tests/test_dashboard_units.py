"""The dashboard's parts that need no browser: the operator's credentials (right, wrong,
malformed, throttled), the --http address, the live hub's bound on a stalled browser, the
workload page's statistics and the live feed's hooks on a controller fed by hand."""
import asyncio
import base64

import pytest

from edgefleet.controller.dashboard import auth, hub as hubmod
from edgefleet.controller.dashboard.app import workload_stats
from edgefleet.controller.dashboard.auth import OperatorCredentials, Throttled
from edgefleet.controller.dashboard.feed import LiveFeed
from edgefleet.controller.dashboard.server import parse_http_address
from edgefleet.controller.errors import ConfigError
from edgefleet.controller.fleet.controller import FleetController
from edgefleet.controller.security.material import FleetSecurity
from edgefleet.controller.security.principals import OPERATOR, OPERATOR_USER
from edgefleet.controller.store import open_registry
from edgefleet.firmware import protocol


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_only_the_operator_login_acts(tmp_path):
    security = FleetSecurity(str(tmp_path / "security"))
    security.init()
    creds = OperatorCredentials.for_fleet(security)
    password = security.service(OPERATOR).password
    assert creds.check(basic(OPERATOR_USER, password)) == OPERATOR_USER
    node = security.node("pi-1")
    for header in (None, "", basic(OPERATOR_USER, "wrong"), basic("pi-1", node.password),
                   basic(OPERATOR_USER, password + "x"), "Basic !!!", "Bearer " + password, "Basic " +
                   base64.b64encode(b"\xff\xfe").decode(), basic(OPERATOR_USER, "")):
        assert creds.check(header, "10.0.0.%d" % len(header or "")) is None, header


def test_a_fleet_without_security_gets_a_private_dashboard_login(tmp_path):
    creds = OperatorCredentials.for_fleet(None, state_dir=str(tmp_path))
    path = tmp_path / auth.OWN_LOGINS
    assert path.stat().st_mode & 0o777 == 0o600
    again = OperatorCredentials.for_fleet(None, state_dir=str(tmp_path))
    assert again.operator().password == creds.operator().password   # made once, then kept
    assert creds.check(basic(OPERATOR_USER, creds.operator().password)) == OPERATOR_USER


def test_wrong_guesses_from_one_address_are_throttled(tmp_path):
    clock = Clock()
    creds = OperatorCredentials.for_fleet(None, state_dir=str(tmp_path))
    creds.clock = clock
    right = basic(OPERATOR_USER, creds.operator().password)
    for _ in range(auth.FAILURE_BURST):
        assert creds.check(basic(OPERATOR_USER, "guess"), "10.0.0.9") is None
    with pytest.raises(Throttled):
        creds.check(right, "10.0.0.9")
    assert creds.check(right, "10.0.0.1") == OPERATOR_USER   # another address is not held
    clock.now += auth.FAILURE_EVERY_S
    assert creds.check(right, "10.0.0.9") == OPERATOR_USER


@pytest.mark.parametrize("text, expected", [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:80", ("::1", 80)),
                                            ("localhost:0", ("localhost", 0))])
def test_http_addresses(text, expected):
    assert parse_http_address(text) == expected


@pytest.mark.parametrize("text", ["8080", ":8080", "host:", "host:http", "host:70000", ""])
def test_bad_http_addresses(text):
    with pytest.raises(ConfigError, match="expected ADDR:PORT"):
        parse_http_address(text)


def test_a_stalled_browser_is_cut_off_not_buffered_forever(monkeypatch):
    monkeypatch.setattr(hubmod, "QUEUE_LIMIT", 5)

    async def scenario():
        hub = hubmod.Hub()
        sub = hub.subscribe(asyncio.get_running_loop())
        for i in range(20):
            hub.publish("node", {"i": i})
        await asyncio.sleep(0)
        frames = []
        while not sub.queue.empty():
            frames.append(sub.queue.get_nowait())
        return frames
    frames = asyncio.run(scenario())
    assert len(frames) == 6 and frames[-1] is hubmod.CLOSED
    assert frames[0].startswith("id: 1\nevent: node\ndata: {\"i\":0}")


def test_workload_stats_over_the_last_hour():
    now = 10_000.0
    results = [(now - 30, 0.95, 1000, True), (now - 30, 0.55, 3000, False), (now - 90, 0.05, 2000, None)]
    stats = workload_stats(results, now)
    assert stats["results"] == 3 and stats["score_hist"][9] == 1 and stats["score_hist"][5] == 1
    assert stats["accuracy"] == 0.5
    assert stats["latency_us"]["p50"] == 2000 and stats["latency_us"]["max"] == 3000
    assert sum(stats["throughput"]["per_s"]) * 60 == 3
    assert workload_stats([], now)["latency_us"] is None


def test_the_feed_turns_a_heartbeat_into_a_live_row_and_an_audit_event_into_an_event(tmp_path):
    published = []

    class Recorder:
        def publish(self, kind, data):
            published.append((kind, data))

    clock = Clock()
    registry = open_registry(str(tmp_path / "fleet.db"))
    fleet = FleetController(registry, clock=clock)
    feed = LiveFeed(Recorder(), clock=clock)
    feed.attach(fleet)
    fleet.on_audit = feed.audited
    hello = protocol.encode("hello", {"v": 1, "node": "n-1", "board": "rpi4", "runtime": "cpython", "fw": "0.1.0",
                                      "boot": 1, "caps": {}})
    topic = protocol.node_topic("ef", "n-1", "hello")
    fleet.handle(topic, hello)
    feed.message(topic, hello, 0.001)
    fleet.audit()
    hb = protocol.encode("hb", {"v": 1, "node": "n-1", "boot": 1, "seq": 7, "up": 1, "cpu": 0.25, "mem_free": 10,
                                "mem_total": 20, "power": {"src": "battery", "pct": 50, "mw": None}, "temp": None,
                                "wl": []})
    topic = protocol.node_topic("ef", "n-1", "hb")
    fleet.handle(topic, hb)
    feed.message(topic, hb, 0.001)
    kinds = [k for k, _ in published]
    assert "event" in kinds and kinds[-1] == "node"
    row = published[-1][1]
    assert (row["id"], row["cpu"], row["hb_seq"], row["hb_at"], row["power"]["pct"]) == ("n-1", 0.25, 7, 1000.0, 50)
    feed.message("garbage/topic", b"x", 0.001)   # not the fleet's: ignored, nothing raised
    assert feed.messages["hb"] == 1 and feed.ingest.n == 2
