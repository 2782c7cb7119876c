"""The operator's CLI on another machine: it holds only what `edgefleet join` took from the fleet
host's operator kit (the CA certificate, the operator login, sign.pub, the broker URL) and asks
the running controller over a real mosquitto with TLS, the fleet's logins and ACLs
(docs/protocol.md "Operator requests"). Every request is checked against what the registry
file says on the controller's host; nodes and strangers cannot ask; garbage leaves the
controller serving."""
import json
import os
import queue
import signal
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest

from edgefleet import models
from edgefleet.controller import cli
from edgefleet.controller.broker import SecureMosquitto
from edgefleet.controller.deploy import bundle
from edgefleet.controller.errors import EXIT_CONFIG, EXIT_CONNECTION, EXIT_OPERATION
from edgefleet.controller.fleet import fleetfile
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.install import keys
from edgefleet.controller.mqttlink import BrokerLink
from edgefleet.controller.netutil import BrokerAddress
from edgefleet.controller.security.material import FleetSecurity
from edgefleet.controller.security.principals import CONTROLLER, OPERATOR
from edgefleet.controller.sim.simfleet import SimFleet
from edgefleet.controller import opwire
from edgefleet.firmware import protocol
from support.waiting import wait_until

pytestmark = pytest.mark.e2e
LAYOUT = [("pi-1", "rpi4"), ("pi-2", "rpi4")]
WORKLOAD = {"id": "w", "model": "digits_dense", "rate": 2.0, "replicas": 1, "input": {"kind": "samples"},
            "constraints": {"runtime": "cpython"}, "resources": {"cpu_share": 5}}


class Fleet:
    """The fleet host's side (its own EDGEFLEET_HOME) and the operator machine's home."""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    f = Fleet()
    f.home, f.op_home, f.op_xdg = str(root / "fleet-home"), str(root / "op-home"), str(root / "op-xdg")
    f.security = FleetSecurity(os.path.join(f.home, "security"))
    f.security.init()
    f.key = keys.create(os.path.join(f.home, keys.HOST_FILE))
    f.security.node("pi-9")   # a board's login (its board is not running): what a thief of one holds
    f.broker = SecureMosquitto(f.security).start()
    f.db = str(root / "fleet.db")
    f.sim = SimFleet(str(root / "boards"), f.broker.local_host, None, LAYOUT, security=f.security,
                     tls_port=f.broker.port)
    f.controller = None
    try:
        for entry in LAYOUT:
            f.sim.add(*entry)
        link = BrokerLink(BrokerAddress.parse(f.broker.url), CONTROLLER, f.security)
        f.controller = ControllerService(None, None, db_path=f.db, manifests=models.manifests(), link=link,
                                         workloads=[WORKLOAD]).start()
        f.sim.start()
        wait_until(lambda: len([n for n in (f.controller.snapshot() or {"nodes": []})["nodes"]
                                if n["state"] == "online"]) == 2, 60, "both nodes online")
        # The fleet host packs the kit; the operator's machine joins with it.
        kit = str(root / "operator.kit")
        with pytest.MonkeyPatch.context() as env:
            env.setenv("EDGEFLEET_HOME", f.home)
            assert cli.main(["operator-kit", "-o", kit, "--broker", f.broker.url]) == 0
        assert os.stat(kit).st_mode & 0o777 == 0o600
        with pytest.MonkeyPatch.context() as env:
            env.setenv("EDGEFLEET_HOME", f.op_home)
            env.setenv("XDG_CONFIG_HOME", f.op_xdg)
            assert cli.main(["join", kit]) == 0
        yield f
    finally:
        f.sim.stop()
        if f.controller is not None:
            f.controller.stop()
        f.broker.stop()


@pytest.fixture
def operator(fleet, monkeypatch, capsys):
    """Run the CLI as the operator's machine: (exit status, stdout, stderr)."""
    monkeypatch.setenv("EDGEFLEET_HOME", fleet.op_home)
    monkeypatch.setenv("XDG_CONFIG_HOME", fleet.op_xdg)
    monkeypatch.delenv("EDGEFLEET_BROKER", raising=False)

    def run(*argv):
        capsys.readouterr()
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def local(fleet, capsys, *argv):
    """The same command on the controller's host, reading the registry file (--db)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EDGEFLEET_HOME", fleet.home)
        capsys.readouterr()
        assert cli.main(list(argv) + ["--db", fleet.db]) == 0
        return capsys.readouterr().out


def test_the_joined_machine_holds_the_operator_login_and_no_fleet_secret(fleet):
    files = sorted(os.path.relpath(os.path.join(d, n), fleet.op_home)
                   for d, _, names in os.walk(fleet.op_home) for n in names if not n.endswith(".lock"))
    assert files == ["security/ca.pem", "security/principals.json", "sign.pub"], files
    with open(os.path.join(fleet.op_home, "security", "principals.json")) as f:
        assert list(json.load(f)["principals"]) == ["ef.operator"]
    assert keys.parse(open(os.path.join(fleet.op_home, "sign.pub")).read()) == keys.public(fleet.key)
    for name in files:
        assert os.stat(os.path.join(fleet.op_home, name)).st_mode & 0o077 == 0, name
    config = open(os.path.join(fleet.op_xdg, "edgefleet", "config.toml")).read()
    assert fleet.broker.url in config


def test_every_read_matches_the_registry_on_the_controller_host(fleet, operator, capsys):
    code, out, err = operator("status", "--json")
    assert code == 0, err
    remote = json.loads(out)
    here = json.loads(local(fleet, capsys, "status", "--json"))
    assert sorted(n["id"] for n in remote["nodes"]) == sorted(n["id"] for n in here["nodes"]) == ["pi-1", "pi-2"]
    assert [(w["id"], w["model"], w["replicas"]) for w in remote["workloads"]] == \
        [(w["id"], w["model"], w["replicas"]) for w in here["workloads"]] == [("w", "digits_dense", 1)]
    code, out, err = operator("status")
    assert code == 0 and "pi-1" in out and "WORKLOAD" in out, err

    # The audit log: every event the registry held a moment ago is in the controller's answer.
    here = json.loads(local(fleet, capsys, "events", "--json", "--limit", "1000"))
    code, out, err = operator("events", "--json", "--limit", "1000")
    assert code == 0, err
    remote = json.loads(out)
    key = [(e["ts"], e["kind"], e["msg"]) for e in here]
    assert key and [(e["ts"], e["kind"], e["msg"]) for e in remote][:len(key)] == key
    code, out, _ = operator("events", "--node", "pi-1", "--json")
    assert {e["node"] for e in json.loads(out)} == {"pi-1"}

    code, out, err = operator("logs", "pi-1", "--json")
    assert code == 0, err
    assert json.loads(out) == json.loads(local(fleet, capsys, "logs", "pi-1", "--json"))
    assert "registered" in [e["kind"] for e in json.loads(out)]
    code, _, err = operator("logs", "nope")
    assert code == EXIT_OPERATION and "edgefleet: no node 'nope'" in err, err

    code, out, err = operator("export")
    assert code == 0, err
    assert out == local(fleet, capsys, "export")
    assert fleetfile.parse(out)[0]["id"] == "w"

    code, out, err = operator("top", "--count", "1")
    assert code == 0 and "edgefleet top" in out and "pi-2" in out, err


def test_apply_move_and_drain_act_through_the_controller(fleet, operator, tmp_path):
    path = tmp_path / "fleet.toml"
    path.write_text(fleetfile.dump([WORKLOAD, dict(WORKLOAD, id="w2")]))
    code, out, err = operator("apply", str(path), "--dry-run")
    assert code == 0 and "add workload     w2" in out and "applied" not in out, (out, err)
    assert [w["id"] for w in fleet.controller.snapshot()["workloads"]] == ["w"]
    code, out, err = operator("apply", str(path))
    assert code == 0 and "applied: 2 workloads (1 added, 0 removed)" in out, (out, err)
    wait_until(lambda: [w["id"] for w in fleet.controller.snapshot()["workloads"]] == ["w", "w2"], 5, "w2 declared")

    host = wait_until(lambda: next(iter(w["nodes"] for w in fleet.controller.snapshot()["workloads"]
                                        if w["id"] == "w" and len(w["nodes"]) == 1), None), 30, "w placed")[0]
    other = "pi-2" if host == "pi-1" else "pi-1"
    code, out, err = operator("move", "w", other)
    assert code == 0 and "moving w from %s to %s" % (host, other) in out, (out, err)
    code, _, err = operator("move", "nope", other)
    assert code == EXIT_OPERATION and "edgefleet: no workload 'nope'" in err, err

    code, out, err = operator("drain", other)
    assert code == 0 and "draining %s" % other in out, (out, err)
    assert wait_until(lambda: [n for n in fleet.controller.snapshot()["nodes"] if n["id"] == other][0]["draining"],
                      5, "the drain in the snapshot")
    code, out, err = operator("drain", other, "--undo")
    assert code == 0 and "%s takes work again" % other in out, (out, err)
    code, _, err = operator("drain", other, "--undo")
    assert code == EXIT_OPERATION and "is not draining" in err, err

    path.write_text(fleetfile.dump([WORKLOAD]))
    code, out, err = operator("apply", str(path))
    assert code == 0 and "1 removed" in out, (out, err)

    # A plan too big for one reply (200 workloads the two Pis cannot all take) comes in parts.
    many = [dict(WORKLOAD, id="bulk-%03d" % i, resources={"cpu_share": 50}) for i in range(200)]
    path.write_text(fleetfile.dump(many))
    code, out, err = operator("apply", str(path), "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)["plan"]
    assert len(out) > 2 * 6000 and plan["add"] == [w["id"] for w in many] and plan["remove"] == ["w"]
    assert len(plan["pending"]) >= 190


def test_events_follow_prints_new_events_as_the_controller_records_them(fleet, operator):
    env = dict(os.environ, EDGEFLEET_HOME=fleet.op_home, XDG_CONFIG_HOME=fleet.op_xdg)
    env.pop("EDGEFLEET_BROKER", None)
    proc = subprocess.Popen([sys.executable, "-m", "edgefleet.controller.cli", "events", "--follow", "--node", "pi-2",
                             "--limit", "3", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    try:
        import threading
        threading.Thread(target=lambda: [lines.put(json.loads(line)) for line in proc.stdout], daemon=True).start()
        first = [lines.get(timeout=20) for _ in range(3)]   # the recent ones
        assert {e["node"] for e in first} == {"pi-2"}
        assert operator("drain", "pi-2")[0] == 0
        assert operator("drain", "pi-2", "--undo")[0] == 0
        seen = []
        deadline = time.monotonic() + 10
        while [e["kind"] for e in seen if e["kind"] in ("drain", "undrain")] != ["drain", "undrain"]:
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        assert all(e["node"] == "pi-2" for e in seen)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, proc.stderr.read()


def test_deploy_checks_bundles_with_the_public_key_and_resolves_groups_from_the_controller(fleet, operator, tmp_path):
    assert not os.path.exists(os.path.join(fleet.op_home, keys.HOST_FILE))
    foreign = tmp_path / "foreign.efb"
    foreign.write_bytes(bundle.build("rpi4", "9.0", os.urandom(32), models=[], simulated=True))
    code, _, err = operator("deploy", str(foreign), "--to", "all")
    assert code == EXIT_CONFIG and "signature does not verify" in err, err
    signed = tmp_path / "signed.efb"
    signed.write_bytes(bundle.build("rpi4", "9.0", fleet.key, models=[], simulated=True))
    # Signed right, so deploy goes on to ask the controller which nodes the group names.
    code, _, err = operator("deploy", str(signed), "--to", "rpi-pico-w")
    assert code == EXIT_CONFIG and "group 'rpi-pico-w' matches no rpi4 node in the fleet of the controller on %s" % (
        fleet.broker.url) in err, err
    code, _, err = operator("rollback", "--to", "pi-9")
    assert code == EXIT_CONFIG and "group 'pi-9' matches no node" in err, err


def test_no_controller_is_a_clear_failure_within_the_wait(fleet, operator):
    idle = SecureMosquitto(fleet.security).start()   # the fleet's logins, but no controller on it
    try:
        for argv in (("status",), ("move", "w", "pi-1"), ("drain", "pi-1"), ("events",), ("export",)):
            started = time.monotonic()
            code, out, err = operator(*argv, "--broker", idle.url, "--wait", "2")
            assert code == EXIT_CONNECTION, (argv, out, err)
            assert "edgefleet: no controller answered on %s within 2 s (is `edgefleet controller` running?)" % (
                idle.url) in err, err
            assert time.monotonic() - started < 6
    finally:
        idle.stop()


def _client(fleet, user=None, password=None, client_id="intruder"):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.tls_set(ca_certs=fleet.security.ca_cert)
    if user is not None:
        client.username_pw_set(user, password)
    answers = queue.Queue()
    client.on_connect = lambda c, u, f, rc, p: answers.put(("connack", rc))
    client.on_subscribe = lambda c, u, mid, rcs, p: answers.put(("suback", rcs))
    client.on_message = lambda c, u, m: answers.put(("message", m))
    client.connect(fleet.broker.local_host, fleet.broker.port)
    client.loop_start()
    return client, answers


def _draining(fleet, node):
    return next(n["draining"] for n in fleet.controller.snapshot()["nodes"] if n["id"] == node)


def test_nodes_and_strangers_cannot_ask(fleet, operator):
    stranger, answers = _client(fleet)
    assert str(answers.get(timeout=10)[1]) == "Not authorized"
    stranger.loop_stop()

    # A node's own login (a stolen board): it may not read replies or the audit log, and its
    # requests never reach the controller.
    node = fleet.security.node("pi-9")
    thief, answers = _client(fleet, node.name, node.password, client_id=node.name)
    assert str(answers.get(timeout=10)[1]) == "Success"
    try:
        for topic in (opwire.reply_topic("ef", "stolen"), opwire.audit_topic("ef"), "ef/ctrl/#"):
            thief.subscribe(topic, qos=1)
            kind, codes = answers.get(timeout=5)
            assert kind == "suback" and codes[0].is_failure, (topic, codes)
        request = protocol.encode("op_req", {"v": 1, "id": "stolen", "op": "drain", "args": {"node": "pi-2"}})
        thief.publish(opwire.request_topic("ef"), request, qos=1).wait_for_publish(5)
        time.sleep(2)
        assert not _draining(fleet, "pi-2")
    finally:
        thief.loop_stop()
        thief.disconnect()

    # The operator's machine holds no node's login to try.
    code, _, err = operator("status", "--broker", "mqtts://pi-9@%s:%d" % (fleet.broker.local_host, fleet.broker.port),
                            "--wait", "2")
    assert code == EXIT_CONFIG and "edgefleet: no broker credentials for 'pi-9'" in err, err


def test_malformed_requests_get_errors_or_are_dropped_and_the_controller_serves_on(fleet, operator):
    op = fleet.security.service(OPERATOR)
    client, answers = _client(fleet, op.name, op.password, client_id="fuzzer")
    assert str(answers.get(timeout=10)[1]) == "Success"
    client.subscribe(opwire.reply_topic("ef", "+"), qos=1)
    assert answers.get(timeout=5)[0] == "suback"
    request_topic = opwire.request_topic("ef")
    rejected = fleet.controller.fleet.rejected
    try:
        dropped = [b"not json", b"[" * 5000, b'{"v": 1, "id": "x", "op": "status", "args": {}, "pad": "'
                   + b"x" * 70000 + b'"}', json.dumps({"v": 1, "id": "../../#", "op": "status", "args": {}}).encode(),
                   json.dumps({"v": 2, "id": "b1", "op": "status", "args": {}}).encode(),
                   json.dumps({"v": 1, "id": "b2", "op": "reboot", "args": {}}).encode()]
        for payload in dropped:
            client.publish(request_topic, payload, qos=1).wait_for_publish(5)
        answered = {"e1": {"op": "move", "args": {"workload": "w"}},               # a missing argument
                    "e2": {"op": "drain", "args": {"node": "pi-1", "extra": 1}},   # one it does not take
                    "e3": {"op": "events", "args": {"limit": 10 ** 9}},
                    "e4": {"op": "apply", "args": {"workloads": [{"id": "BAD ID", "model": "m", "rate": 1}]}},
                    "e5": {"op": "logs", "args": {"node": ["pi-1"]}}}
        for rid, body in answered.items():
            client.publish(request_topic, json.dumps(dict(body, v=1, id=rid)), qos=1).wait_for_publish(5)
        replies = {}
        deadline = time.monotonic() + 10
        while len(replies) < len(answered) and time.monotonic() < deadline:
            kind, message = answers.get(timeout=max(0.1, deadline - time.monotonic()))
            if kind == "message":
                reply = protocol.decode("op_reply", message.payload)
                replies[reply["id"]] = reply
        assert sorted(replies) == sorted(answered), replies
        assert not any(r["ok"] for r in replies.values()), replies
        assert "workload[0]" in replies["e4"]["error"] and "limit" in replies["e3"]["error"], replies
        assert fleet.controller.fleet.rejected >= rejected + len(dropped)
    finally:
        client.loop_stop()
        client.disconnect()
    assert fleet.controller.alive()
    code, out, err = operator("status", "--json")
    assert code == 0 and [w["id"] for w in json.loads(out)["workloads"]] == ["w"], err
    assert not _draining(fleet, "pi-1")
