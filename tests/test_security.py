"""The fleet's links under attack, on real mosquitto with TLS and the fleet's logins and ACLs
(controller/security/, docs/security.md): a secured fleet of a MicroPython node (the real
interpreter at the Pico W profile's heap) and a CPython node, and an attacker on the network."""
import os
import queue
import sqlite3
import stat
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest

from edgefleet import models
from edgefleet.controller.broker import SecureMosquitto
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.mqttlink import BrokerLink
from edgefleet.controller.netutil import BrokerAddress
from edgefleet.controller.security import pki
from edgefleet.controller.security.material import FleetSecurity
from edgefleet.controller.security.principals import CONTROLLER, OPERATOR
from edgefleet.controller.sim.demo import demo_workloads
from edgefleet.controller.sim.simfleet import SimFleet
from edgefleet.firmware import protocol
from support import interp
from support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.micropython]
MCU, PI = "node-a", "node-b"


def attacker(broker, security, user=None, password=None, client_id="intruder"):
    """A paho client over TLS (it trusts the fleet CA: the network is hostile, not the broker);
    (client, CONNACK reason) once the broker has answered."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.tls_set(ca_certs=security.ca_cert)
    if user is not None:
        client.username_pw_set(user, password)
    answer = queue.Queue()
    client.on_connect = lambda c, u, f, rc, p: answer.put(rc)
    client.connect(broker.local_host, broker.port)
    client.loop_start()
    try:
        return client, answer.get(timeout=10)
    except queue.Empty:
        return client, None


@pytest.fixture
def secure_fleet(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))
    security = FleetSecurity()
    security.init()
    broker = SecureMosquitto(security).start()
    layout = [(MCU, "rpi-pico-w"), (PI, "rpi4")]
    fleet = SimFleet(str(tmp_path / "boards"), broker.local_host, None, layout, security=security, tls_port=broker.port)
    db = str(tmp_path / "fleet.db")
    controller = None
    try:
        for entry in layout:
            fleet.add(*entry)
        link = BrokerLink(BrokerAddress.parse(broker.url), CONTROLLER, security)
        controller = ControllerService(None, None, db_path=db, manifests=models.manifests(), link=link,
                                       workloads=demo_workloads(layout, fleet.runtimes, models.names())).start()
        fleet.start()
        yield security, broker, fleet, controller, db
    finally:
        fleet.stop()
        if controller is not None:
            controller.stop()
        broker.stop()


def _results(controller, node):
    snap = controller.snapshot() or {"nodes": []}
    return next((n["results"] for n in snap["nodes"] if n["id"] == node), 0)


def test_strangers_and_nodes_cannot_act_for_other_nodes(secure_fleet):
    security, broker, fleet, controller, db = secure_fleet
    wait_until(lambda: _results(controller, MCU) > 3 and _results(controller, PI) > 3, 90, "results from both nodes")
    snap = controller.snapshot()
    assert {n["id"]: n["link"] for n in snap["nodes"]} == {MCU: "tls", PI: "tls"}

    # An operator's view of node B's topics: what the attacker manages to publish there.
    spy_seen = queue.Queue()
    spy = BrokerLink(BrokerAddress.parse(broker.url), OPERATOR, security).client("spy")
    spy.on_message = lambda c, u, m: spy_seen.put((m.topic, m.payload))
    spy.connect(broker.local_host, broker.port)
    spy.subscribe("ef/node/%s/#" % PI, qos=1)
    spy.loop_start()

    refused = []
    try:
        for label, args in (("anonymous", {}), ("wrong password", {"user": MCU, "password": "guess"}),
                            ("A's login as client id B", {"user": MCU, "password": security.node(MCU).password,
                                                          "client_id": PI})):
            client, reason = attacker(broker, security, **args)
            refused.append((label, str(reason)))
            client.loop_stop()
            client.disconnect()
        assert all(reason == "Not authorized" for _, reason in refused), refused

        b_before = _results(controller, PI)
        # A stolen board's login: node A's credentials, publishing as node B - a result, console
        # lines, and the controller's own kinds: a command, an assignment epoch, an ack, an
        # update rollback.
        client, reason = attacker(broker, security, MCU, security.node(MCU).password, client_id=MCU)
        assert str(reason) == "Success"
        forged = {"v": 1, "node": PI, "boot": 999, "seq": 1, "wl": "digits-pi", "up": 1, "label": 3,
                  "score": 1.0, "us": 1}
        for kind, payload in (("result", protocol.encode("result", forged)),
                              ("log", protocol.encode("log", {"v": 1, "node": PI, "boot": 999, "up": 1,
                                                              "lines": ["forged console line"]})),
                              ("cmd", protocol.encode("cmd", {"v": 1, "id": "x", "op": "reboot"})),
                              ("assign", protocol.encode("assign", {"v": 1, "epoch": 4102444800000, "wl": []})),
                              ("ack", protocol.encode("ack", {"v": 1, "boot": 1, "seq": 999999})),
                              ("ota", protocol.encode("ota", {"v": 1, "id": "x", "op": "rollback"}))):
            client.publish(protocol.node_topic("ef", PI, kind), payload, qos=1).wait_for_publish(5)
        time.sleep(1.5)
        client.loop_stop()
        client.disconnect()
    finally:
        spy.loop_stop()
        spy.disconnect()

    seen = []
    while not spy_seen.empty():
        seen.append(spy_seen.get())
    assert not [t for t, p in seen
                if b"999" in p or b'"x"' in p or b"4102444800000" in p or b"forged console" in p], seen
    # Node B kept working, untouched; node A came back after its login was borrowed.
    wait_until(lambda: _results(controller, PI) > b_before + 5, 30, "node B's results going on")
    a_now = _results(controller, MCU)
    wait_until(lambda: _results(controller, MCU) > a_now + 3, 60, "node A's results going on")
    with sqlite3.connect("file:%s?mode=ro" % db, uri=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM results WHERE boot = 999").fetchone()[0] == 0
        # Exactly once: one row per (node, boot, seq) by the key, and no sequence number missing.
        for node, boot, count, low, high in conn.execute(
                "SELECT node, boot, COUNT(*), MIN(seq), MAX(seq) FROM results GROUP BY node, boot"):
            assert count == high - low + 1, (node, boot, count, low, high)
        assert conn.execute("SELECT state FROM nodes WHERE id = ?", (PI,)).fetchone()[0] == "online"


def test_both_runtimes_refuse_a_broker_signed_by_another_ca(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))
    security = FleetSecurity()
    security.init()
    node = security.node("probe")
    ours = tmp_path / "ca.der"
    ours.write_bytes(security.ca_der())
    _, foreign_pem = pki.make_ca("someone else's CA")
    foreign = tmp_path / "foreign.der"
    foreign.write_bytes(pki.to_der(foreign_pem))
    with SecureMosquitto(security) as broker:
        for runtime in ("micropython", "cpython"):
            heap = "196608"   # the Pico W profile's heap_bytes
            args = [os.path.join(interp.FIRMWARE_TESTS, "tls_probe.py"), broker.local_host, str(broker.port)]
            good = interp.run(runtime, args + [str(ours), node.name, node.password], heap=heap, timeout=60)
            assert "connected and published" in good.stdout, (runtime, good.stdout, good.stderr)
            bad = interp.run(runtime, args + [str(foreign), node.name, node.password], heap=heap, timeout=60)
            assert "refused: TlsRefused" in bad.stdout and "failed TLS verification" in bad.stdout, \
                (runtime, bad.stdout, bad.stderr)
            reason = "not correctly signed by the trusted CA" if runtime == "micropython" else "certificate verify failed|self-signed"
            assert any(r in bad.stdout for r in reason.split("|")), (runtime, bad.stdout)


def test_a_node_on_a_firmware_without_tls_names_it_as_its_config_and_does_not_crash_its_link(tmp_path, monkeypatch):
    """A MicroPython built without ssl (a board image or a simulated board's interpreter, e.g. a
    32-bit build without lib/mbedtls) given a TLS link: a ConfigError naming the missing module,
    which the link task retries with backoff (firmware/node.py keep_link), not an ImportError
    that crashes it until its supervisor gives it up."""
    from edgefleet.firmware import errors, tlslink
    ca = tmp_path / "ca.der"
    ca.write_bytes(b"\x30\x00")
    monkeypatch.setitem(sys.modules, "ssl", None)   # `import ssl` raises ImportError
    with pytest.raises(errors.ConfigError, match="has no ssl module, so no TLS link") as failure:
        tlslink.client_context(str(ca))
    assert failure.value.field == "broker.tls"


def test_secrets_and_the_registry_are_owner_only_after_every_writer(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, EDGEFLEET_HOME=str(home))
    secret = home / "fleet.key"
    secret.write_text("00" * 32 + "\n")
    os.chmod(secret, 0o644)   # an old key with a careless mode

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "edgefleet.controller.cli"] + list(args), env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def modes():
        found = {}
        for folder, _, names in os.walk(home):
            for name in names:
                if not name.endswith(".lock"):
                    path = os.path.join(folder, name)
                    found[os.path.relpath(path, home)] = stat.S_IMODE(os.stat(path).st_mode)
        return found

    cli("init")
    cli("keygen", "--force")
    from edgefleet.controller.store import open_registry
    open_registry(str(home / "fleet.db")).close()
    FleetSecurity(str(home / "security")).node("board-1")
    cli("init", "--force")
    found = modes()
    for name in ("signing.key", "fleet.key", "fleet.db", "security/ca.key", "security/ca.pem", "security/broker.key",
                 "security/broker.pem", "security/principals.json"):
        assert found.get(name) == 0o600, (name, oct(found.get(name, 0)), found)
    assert stat.S_IMODE(os.stat(home / "security").st_mode) == 0o700


def test_the_plaintext_listener_opens_only_when_asked_and_keeps_logins_and_acls(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))
    security = FleetSecurity()
    security.init()
    a, b = security.node("plain-a"), security.node("plain-b")

    def plain_client(user, password, client_id):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if user:
            client.username_pw_set(user, password)
        answer = queue.Queue()
        client.on_connect = lambda c, u, f, rc, p: answer.put(str(rc))
        client.connect(broker.local_host, broker.plain_port)
        client.loop_start()
        return client, answer.get(timeout=10)

    with SecureMosquitto(security) as broker:
        assert broker.plain_url is None
    from edgefleet.controller.netutil import free_port
    with SecureMosquitto(security, plain_port=free_port()) as broker:
        seen = queue.Queue()
        spy, reason = plain_client(b.name, b.password, b.name)
        assert reason == "Success"
        spy.on_message = lambda c, u, m: seen.put(m.topic)
        spy.subscribe("ef/node/plain-b/cmd", qos=1)
        time.sleep(0.3)
        anonymous, reason = plain_client(None, None, "stranger")
        assert reason == "Not authorized"
        anonymous.loop_stop()
        intruder, reason = plain_client(a.name, a.password, a.name)
        assert reason == "Success"
        intruder.publish("ef/node/plain-b/cmd", b'{"v":1,"id":"x","op":"reboot"}', qos=1).wait_for_publish(5)
        time.sleep(0.5)
        for client in (intruder, spy):
            client.loop_stop()
            client.disconnect()
        assert seen.empty()


def test_controller_and_deployer_refuse_a_broker_they_cannot_verify_and_name_a_refused_login(tmp_path, monkeypatch):
    from edgefleet.controller.deploy.deployer import Deployer
    from edgefleet.controller.errors import BrokerError
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))
    ours, theirs = FleetSecurity(), FleetSecurity(str(tmp_path / "theirs"))
    ours.init()
    theirs.init()
    with SecureMosquitto(theirs) as impostor:
        address = BrokerAddress.parse(impostor.url)
        with pytest.raises(BrokerError, match="failed TLS verification against the fleet CA"):
            Deployer(link=BrokerLink(address, OPERATOR, ours)).__enter__()
        service = ControllerService(None, None, db_path=str(tmp_path / "fleet.db"), link=BrokerLink(address, CONTROLLER, ours))
        with pytest.raises(BrokerError, match="failed TLS verification against the fleet CA"):
            service.start(timeout=5)
    # The right broker (its CA is trusted), but logins of another fleet it has never seen.
    stranger = FleetSecurity(str(tmp_path / "stranger"))
    stranger.init()
    with open(stranger.ca_cert, "wb") as f:
        f.write(ours.ca_pem())
    with SecureMosquitto(ours) as broker:
        with pytest.raises(BrokerError, match="refused ef.operator: Not authorized"):
            Deployer(link=BrokerLink(BrokerAddress.parse(broker.url), OPERATOR, stranger)).__enter__()
