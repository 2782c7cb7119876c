"""Live node console lines (`edgefleet logs NODE --follow`, kind `log` in docs/protocol.md):
on real mosquitto with TLS, the fleet's logins and ACLs, a MicroPython node (the real
interpreter at the Pico W profile's heap) and a CPython node, whose link to the broker runs
through a proxy the test can take down. The follower is the real CLI in a subprocess, logged
in as the operator."""
import json
import os
import queue
import signal
import subprocess
import sys
import time

import pytest

from edgefleet.controller.errors import EXIT_CONNECTION
from edgefleet.controller.broker import SecureMosquitto
from edgefleet.controller.cli.follow import LogFollower, batch_lines
from edgefleet.controller.mqttlink import BrokerLink
from edgefleet.controller.netutil import BrokerAddress
from edgefleet.controller.security.material import FleetSecurity
from edgefleet.controller.security.principals import CONTROLLER, OPERATOR
from edgefleet.controller.sim.linkproxy import LinkProxy
from edgefleet.controller.sim.simfleet import SimFleet
from edgefleet.firmware import protocol
from support.waiting import wait_until

VECTORS = os.path.join(os.path.dirname(__file__), "vectors", "messages.json")
MCU, PI = "log-mcu", "log-pi"
WORKLOADS = {MCU: {"id": "digits-mcu", "model": "digits_dense", "rate": 4.0, "input": {"kind": "samples"}},
             PI: {"id": "digits-pi", "model": "digits_conv", "rate": 10.0, "input": {"kind": "samples"}}}


def test_the_follower_prints_valid_log_vectors_and_skips_invalid_ones(tmp_path, monkeypatch):
    """The shared vectors, on the controller side: what the CLI prints of each."""
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path))
    shown = []
    follower = LogFollower(BrokerLink(BrokerAddress("mqtt", "127.0.0.1", 1), OPERATOR), "mcu-2",
                           lambda msg: shown.extend(batch_lines("mcu-2", msg)))
    with open(VECTORS) as f:
        vectors = [v for v in json.load(f)["messages"] if v["kind"] == "log"]
    assert len(vectors) >= 8
    for vec in vectors:
        del shown[:]
        follower._show(vec["payload"].encode())
        if not vec["valid"]:
            assert shown == [], vec
            continue
        msg = json.loads(vec["payload"])
        assert len(shown) == len(msg["lines"]) + (1 if msg.get("dropped") else 0), (vec, shown)
        assert all(" mcu-2 boot 7: " in line for line in shown), shown
        if msg.get("dropped"):
            assert shown[0].endswith("[%d console lines dropped]" % msg["dropped"]), shown
    # A node's log on another node's follower is not shown as that node's.
    del shown[:]
    follower._show(json.dumps({"v": 1, "node": "mcu-3", "boot": 1, "up": 1, "lines": ["x"]}).encode())
    assert shown == []
    assert batch_lines("n", {"boot": 4, "lines": ["a"]}, now=0)[0].endswith(" n boot 4: a")


def test_the_controller_stores_no_console_lines(tmp_path):
    from edgefleet.controller.fleet.controller import FleetController
    from edgefleet.controller.store import open_registry
    from test_controller import hello

    registry = open_registry(str(tmp_path / "fleet.db"))
    ctl = FleetController(registry)
    ctl.handle("ef/node/mcu-1/hello", hello("mcu-1"))
    events = len(registry.events("mcu-1", 100))
    log = {"v": 1, "node": "mcu-1", "boot": 1, "up": 5, "lines": ["edgefleet-node: link lost"], "dropped": 2}
    assert ctl.handle("ef/node/mcu-1/log", json.dumps(log).encode()) == []
    assert ctl.rejected == 0 and len(registry.events("mcu-1", 100)) == events
    registry.close()


class Fleet:
    """The two nodes behind one link proxy, a controller stand-in that assigns them a workload
    each (retained, as the controller does), and an operator client that sends commands and
    records every log message with its arrival time."""

    def __init__(self, root):
        self.security = FleetSecurity()
        self.security.init()
        self.broker = SecureMosquitto(self.security).start()
        self.proxy = LinkProxy(self.broker.port).start()
        self.fleet = SimFleet(os.path.join(root, "boards"), self.broker.local_host, None,
                              [(MCU, "rpi-pico-w"), (PI, "rpi4")], keepalive=2, config={"allow_faults": True},
                              security=self.security, tls_port=self.proxy.port)
        self.logs = queue.Queue()
        self.replies = queue.Queue()
        self.clients = []
        self.followers = {}
        self._seen = []

    def client(self, role, name):
        client = BrokerLink(BrokerAddress.parse(self.broker.url), role, self.security).client(name)
        client.connect(self.broker.local_host, self.broker.port)
        client.loop_start()
        self.clients.append(client)
        return client

    def start(self):
        ctl = self.client(CONTROLLER, "ctl-stand-in")
        for node, spec in WORKLOADS.items():
            payload = protocol.encode("assign", {"v": 1, "epoch": 1, "wl": [spec]})
            ctl.publish(protocol.node_topic("ef", node, "assign"), payload, qos=1, retain=True).wait_for_publish(5)
        self.operator = self.client(OPERATOR, "operator-watch")
        self.operator.on_message = self._on_message
        self.operator.subscribe("ef/node/+/log", qos=0)
        self.operator.subscribe("ef/node/+/reply", qos=1)
        return self

    def boot(self):
        self.fleet.start()

    def _on_message(self, client, userdata, m):
        node, kind = protocol.parse_topic("ef", m.topic)
        msg = protocol.decode(kind, m.payload)
        (self.logs if kind == "log" else self.replies).put((time.monotonic(), node, msg))

    def follow(self, node, home):
        """The real CLI, following `node` as the operator (the security folder under `home`)."""
        env = dict(os.environ, EDGEFLEET_HOME=home, PYTHONUNBUFFERED="1")
        out = open(os.path.join(home, "follow-%s.out" % node), "w")
        err = open(os.path.join(home, "follow-%s.err" % node), "w")
        proc = subprocess.Popen([sys.executable, "-m", "edgefleet.controller.cli", "logs", node, "--follow",
                                 "--broker", self.broker.url], stdout=out, stderr=err, text=True, env=env)
        self.followers[node] = (proc, out, err)
        return proc

    def followed(self, node, stream=1):
        with open(self.followers[node][stream].name) as f:
            return f.read().splitlines()

    def command(self, node, op, args, timeout=15):
        cid = "t-%d" % (time.monotonic() * 1000)
        payload = protocol.encode("cmd", {"v": 1, "id": cid, "op": op, "args": args})
        self.operator.publish(protocol.node_topic("ef", node, "cmd"), payload, qos=1).wait_for_publish(5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _, _, reply = self.replies.get(timeout=0.5)
            except queue.Empty:
                continue
            if reply["id"] == cid:
                assert reply["ok"], reply
                return reply
        raise AssertionError("no reply from %s to %s" % (node, op))

    def log_messages(self, node, since=0.0):
        """(arrival, msg) of the log messages from `node` so far that came after `since`."""
        while not self.logs.empty():
            self._seen.append(self.logs.get_nowait())
        return [(t, m) for t, n, m in self._seen if n == node and t >= since]

    def stop(self):
        for proc, out, err in self.followers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            out.close()
            err.close()
        for client in self.clients:
            client.loop_stop()
            client.disconnect()
        self.fleet.stop()
        self.proxy.stop()
        self.broker.stop()


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path))
    f = Fleet(str(tmp_path))
    try:
        yield f.start()
    finally:
        f.stop()


def _lines(fleet, node, since=0.0, needle=""):
    return [line for _, m in fleet.log_messages(node, since) for line in m["lines"] if needle in line]


def _dropped(fleet, node, since=0.0):
    return sum(m.get("dropped", 0) for _, m in fleet.log_messages(node, since))


@pytest.mark.e2e
@pytest.mark.micropython
def test_follow_shows_console_lines_and_the_rate_ring_and_drops_hold(fleet, tmp_path):
    home = str(tmp_path)
    for node in (MCU, PI):
        fleet.follow(node, home)
    # Console lines are not kept for latecomers: the followers listen before the boards boot.
    for node in (MCU, PI):
        wait_until(lambda: [ln for ln in fleet.followed(node, 2) if ln.startswith("following")], 30,
                   "follower of " + node)
    fleet.boot()
    # Both nodes up and running their workload: their boot lines reach the log topic.
    for node in (MCU, PI):
        wait_until(lambda: _lines(fleet, node, needle="boot 1 after"), 90, "%s's boot line" % node)
        wait_until(lambda: _lines(fleet, node, needle="assigned: epoch 1"), 30, "%s's workload" % node)

    # 1. A worker crash each node is made to have shows in the follower's output.
    for node in (MCU, PI):
        wait_until(lambda: [ln for ln in fleet.followed(node) if "boot 1 after" in ln], 30,
                   "follower output of " + node)
        fleet.command(node, "fault", {"kind": "raise", "wl": WORKLOADS[node]["id"]})
    for node in (MCU, PI):
        wl = WORKLOADS[node]["id"]
        shown = wait_until(lambda: [ln for ln in fleet.followed(node) if "%s crashed" % wl in ln], 30,
                           "the crash in %s's follower" % node)
        assert shown[0].split(" ", 1)[1].startswith("%s boot 1: edgefleet-node: %s crashed" % (node, wl)), shown
        assert ":" in shown[0][:8] and len(shown[0].split(" ", 1)[0]) == 8, shown   # HH:MM:SS

    # 2. A flood: 100 lines at once. The MCU's ring keeps the newest 16, the rest are counted as
    # dropped, and what gets out comes at the profile's 5 lines a second after a burst of 10.
    start = time.monotonic()
    fleet.command(MCU, "fault", {"kind": "flood", "lines": 100})
    wait_until(lambda: _lines(fleet, MCU, start, "flood line 100 of 100"), 30, "the flood's last line")
    got = [(t, line) for t, m in fleet.log_messages(MCU, start) for line in m["lines"] if "flood line" in line]
    flood = [line for _, line in got]
    assert flood == ["edgefleet-node: flood line %d of 100" % i for i in range(85, 101)], flood
    assert _dropped(fleet, MCU, start) >= 100 - 16
    span = got[-1][0] - got[0][0]
    assert span >= (len(flood) - 10) / 5.0 - 0.5, (span, len(flood))  # past the burst: 5 a second
    shown = fleet.followed(MCU)
    assert any("console lines dropped]" in ln for ln in shown), shown[-30:]
    assert any(ln.endswith("edgefleet-node: flood line 100 of 100") for ln in shown)

    # 3. Offline: both nodes lose the broker (their link closes and stays refused) while they
    # log 80 lines 100 ms apart. Their lines wait in the ring, the MCU's 16 at most, and once
    # the link is back the first batch counts what was lost.
    for node in (MCU, PI):
        fleet.command(node, "fault", {"kind": "flood", "lines": 80, "every_ms": 100})
    time.sleep(0.3)
    fleet.proxy.stop()
    cut_at = time.monotonic()
    time.sleep(10)
    fleet.proxy = LinkProxy(fleet.broker.port, port=fleet.proxy.port).start()
    restored_at = time.monotonic()
    for node in (MCU, PI):
        wait_until(lambda: _lines(fleet, node, cut_at, "flood line 80 of 80"), 60, "%s's lines after reconnect" % node)
    # The flood ended while the link was cut (8 s of lines), so what the MCU sends once it is
    # back is what its ring kept: the newest 16 lines at most, the drops counted.
    back = fleet.log_messages(MCU, restored_at)
    assert sum(m.get("dropped", 0) for _, m in back) > 0, back
    kept = [ln for _, m in back for ln in m["lines"] if "of 80" in ln]
    assert 0 < len(kept) <= 16 and kept[-1].endswith("flood line 80 of 80"), kept
    # The Pi's ring (128 lines, its profile's) held the whole offline stretch: nothing dropped.
    back = fleet.log_messages(PI, restored_at)
    assert sum(m.get("dropped", 0) for _, m in back) == 0, back
    assert len([ln for _, m in back for ln in m["lines"] if "of 80" in ln]) > 16, back
    shown = fleet.followed(PI)
    assert any(ln.endswith("flood line 80 of 80") for ln in shown), shown[-20:]

    # 4. Ctrl-C ends a follower cleanly.
    for node in (MCU, PI):
        proc = fleet.followers[node][0]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0, fleet.followed(node, 2)


@pytest.mark.e2e
def test_follow_says_so_when_the_broker_refuses(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path))
    security = FleetSecurity()
    security.init()
    security.node("n1")
    with SecureMosquitto(security) as broker:
        env = dict(os.environ, EDGEFLEET_HOME=str(tmp_path))
        # A node's login, from a client id other than the node's own: the broker refuses it.
        url = broker.url.replace("mqtts://", "mqtts://n1@")
        proc = subprocess.run([sys.executable, "-m", "edgefleet.controller.cli", "logs", "n1", "--follow",
                               "--broker", url],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == EXIT_CONNECTION, (proc.stdout, proc.stderr)
        assert proc.stderr.startswith("edgefleet: ") and "refused" in proc.stderr, proc.stderr


@pytest.mark.e2e
def test_follow_json_prints_each_message_and_stops_on_sigterm(mosquitto, tmp_path):
    env = dict(os.environ, EDGEFLEET_HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    err = open(str(tmp_path / "err"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "edgefleet.controller.cli", "logs", "n1", "--follow", "--json",
                             "--broker", mosquitto.url], stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    publisher = None
    try:
        wait_until(lambda: "following n1" in (tmp_path / "err").read_text(), 30, "the follower")
        publisher = BrokerLink(BrokerAddress.parse(mosquitto.url), OPERATOR, FleetSecurity(str(tmp_path))).client("pub")
        publisher.connect(mosquitto.host, mosquitto.port)
        publisher.loop_start()
        sent = {"v": 1, "node": "n1", "boot": 3, "up": 10, "lines": ["one", "two"], "dropped": 4}
        for payload in (b"not json", json.dumps(dict(sent, node="n2")).encode(), json.dumps(sent).encode()):
            publisher.publish("ef/node/n1/log", payload).wait_for_publish(5)
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if publisher is not None:
            publisher.loop_stop()
            publisher.disconnect()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        err.close()
    assert proc.returncode == 0, (tmp_path / "err").read_text()
    assert [json.loads(line) for line in out.splitlines()] == [sent], out
