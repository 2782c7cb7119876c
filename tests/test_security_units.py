"""The security material and rules without a broker: broker URLs and where they come from, the
ACL each role gets, login changes as plugin commands, what a board is given by flash/provision."""
import json
import os
import stat

import pytest

from edgefleet.boards import catalog
from edgefleet.controller.errors import ConfigError, SecurityError
from edgefleet.controller.install import nodelink
from edgefleet.controller.netutil import BrokerAddress, resolve_broker
from edgefleet.controller.security import acl, pki
from edgefleet.controller.security.material import FleetSecurity
from edgefleet.controller.security.principals import CONTROLLER, NODE, OPERATOR, Principal, PrincipalStore
from edgefleet.firmware import protocol


@pytest.mark.parametrize("text,url,tls", [
    ("broker.lan", "mqtt://broker.lan:1883", False), ("mqtts://broker.lan", "mqtts://broker.lan:8883", True),
    ("mqtts://ef.operator@10.0.0.2:9883", "mqtts://ef.operator@10.0.0.2:9883", True),
    ("mqtt://[::1]:1884", "mqtt://[::1]:1884", False),
])
def test_broker_urls(text, url, tls):
    address = BrokerAddress.parse(text)
    assert address.url == url and address.tls == tls


def test_a_password_in_a_broker_url_is_refused():
    with pytest.raises(ConfigError, match="password does not belong"):
        BrokerAddress.parse("mqtts://ef.operator:secret@host")


def test_broker_comes_from_the_flag_then_the_environment_then_the_config_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("EDGEFLEET_BROKER", raising=False)
    assert resolve_broker().url == "mqtts://127.0.0.1:8883"
    (tmp_path / "edgefleet").mkdir()
    (tmp_path / "edgefleet" / "config.toml").write_text('broker = "mqtts://from-file:8883"\n')
    assert resolve_broker().host == "from-file"
    monkeypatch.setenv("EDGEFLEET_BROKER", "mqtts://from-env")
    assert resolve_broker().host == "from-env"
    assert resolve_broker("mqtt://from-flag:1").host == "from-flag"
    (tmp_path / "edgefleet" / "config.toml").write_text("broker = 3\n")
    monkeypatch.delenv("EDGEFLEET_BROKER")
    with pytest.raises(ConfigError, match="must be a string"):
        resolve_broker()


def _allowed(acls, kind, topic):
    from fnmatch import fnmatchcase
    for rule in acls:
        pattern = rule["topic"].replace("+", "*").replace("#", "*")
        if rule["acltype"] == kind and fnmatchcase(topic, pattern):
            return True
    return False


def test_a_node_publishes_only_its_own_node_kinds_and_reads_only_its_own_commands():
    acls = acl.role_acls(Principal("a", NODE, "x"), "ef")
    for kind in protocol.NODE_TOPIC_KINDS:
        own = protocol.node_topic("ef", "a", kind)
        other = protocol.node_topic("ef", "b", kind)
        assert _allowed(acls, "publishClientSend", own) == (kind in protocol.NODE_SENDS), kind
        assert _allowed(acls, "subscribePattern", own) == (kind in protocol.CONTROLLER_SENDS), kind
        assert not _allowed(acls, "publishClientSend", other) and not _allowed(acls, "subscribePattern", other)
    assert _allowed(acls, "subscribePattern", "ef/ctrl/lease")
    assert not _allowed(acls, "publishClientSend", "ef/ctrl/lease")
    assert set(protocol.NODE_SENDS) | set(protocol.CONTROLLER_SENDS) == set(protocol.NODE_TOPIC_KINDS)


def test_operators_send_commands_and_updates_but_not_assignments():
    acls = acl.role_acls(Principal("ef.operator", OPERATOR, "x"), "ef")
    assert _allowed(acls, "publishClientSend", "ef/node/a/cmd") and _allowed(acls, "publishClientSend", "ef/node/a/ota")
    assert not _allowed(acls, "publishClientSend", "ef/node/a/assign")
    assert not _allowed(acls, "publishClientSend", "ef/node/a/result")
    # Nodes' console lines: any node's, read live (`edgefleet logs NODE --follow`), never written.
    assert _allowed(acls, "subscribePattern", "ef/node/a/log")
    assert not _allowed(acls, "publishClientSend", "ef/node/a/log")
    controller = acl.role_acls(Principal("ef.controller", CONTROLLER, "x"), "ef")
    assert _allowed(controller, "subscribePattern", "ef/node/a/log")
    assert not _allowed(controller, "publishClientSend", "ef/node/a/log")


def test_operator_requests_go_from_operators_to_the_controller_only():
    node = acl.role_acls(Principal("a", NODE, "x"), "ef")
    operator = acl.role_acls(Principal("ef.operator", OPERATOR, "x"), "ef")
    controller = acl.role_acls(Principal("ef.controller", CONTROLLER, "x"), "ef")
    request, reply, audit = "ef/ctrl/op/req", "ef/ctrl/op/reply/5f0c2a9e71d3b684", "ef/ctrl/audit"
    assert _allowed(operator, "publishClientSend", request) and not _allowed(controller, "publishClientSend", request)
    assert _allowed(controller, "subscribePattern", request)
    assert _allowed(controller, "publishClientSend", reply) and not _allowed(operator, "publishClientSend", reply)
    assert _allowed(operator, "subscribePattern", reply) and _allowed(operator, "subscribePattern", audit)
    assert _allowed(controller, "publishClientSend", audit) and not _allowed(operator, "publishClientSend", audit)
    for topic in (request, reply, audit, "ef/ctrl/#"):
        assert not _allowed(node, "publishClientSend", topic) and not _allowed(node, "subscribePattern", topic), topic
    assert _allowed(node, "subscribePattern", "ef/ctrl/status")


def test_topic_workload_inputs_come_from_operators_and_are_read_by_nodes():
    node = acl.role_acls(Principal("a", NODE, "x"), "ef")
    operator = acl.role_acls(Principal("ef.operator", OPERATOR, "x"), "ef")
    controller = acl.role_acls(Principal("ef.controller", CONTROLLER, "x"), "ef")
    topic = protocol.input_topic("ef", "cam")
    assert _allowed(operator, "publishClientSend", topic)
    assert _allowed(node, "subscribePattern", topic)
    # A node cannot feed a workload (its own or another node's) forged inputs, and the
    # controller has no business with them.
    assert not _allowed(node, "publishClientSend", topic)
    assert not _allowed(controller, "publishClientSend", topic) and not _allowed(controller, "subscribePattern", topic)
    assert not _allowed(node, "subscribePattern", "ef/wl/cam/other")


def test_login_changes_become_plugin_commands():
    a, b = Principal("a", NODE, "secret-of-a"), Principal("b", NODE, "secret-of-b")
    commands = acl.sync_commands({"a": a}, {"a": Principal("a", NODE, "new"), "b": b}, "ef")
    assert [c["command"] for c in commands] == ["setClientPassword", "createRole", "createClient"]
    assert commands[2]["clientid"] == "b"
    assert [c["command"] for c in acl.sync_commands({"a": a, "b": b}, {"b": b}, "ef")] == ["deleteClient", "deleteRole"]
    config = acl.dynsec_config([a], "ef")
    assert config["clients"][0]["clientid"] == "a" and "secret-of-a" not in json.dumps(config)


def test_principals_are_kept_revoked_and_refuse_a_role_change(tmp_path):
    store = PrincipalStore(str(tmp_path / "sec" / "principals.json"))
    first = store.ensure("a", NODE)
    assert store.ensure("a", NODE).password == first.password
    assert store.ensure("a", NODE, rotate=True).password != first.password
    with pytest.raises(SecurityError, match="already a node principal"):
        store.ensure("a", OPERATOR)
    assert store.revoke("a") and not store.revoke("a")
    with pytest.raises(SecurityError, match="no broker credentials"):
        store.get("a")
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert "password" not in repr(first)


def test_broker_certificate_is_issued_again_for_a_new_name_under_the_same_ca(tmp_path):
    security = FleetSecurity(str(tmp_path / "sec"))
    security.init()
    ca = security.ca_pem()
    assert not security.ensure_broker_cert(["127.0.0.1"])
    assert security.ensure_broker_cert(["10.9.8.7"])
    assert "10.9.8.7" in pki.server_names(open(security.broker_cert, "rb").read())
    assert security.ca_pem() == ca


def test_a_board_that_cannot_hold_tls_is_refused_an_mqtts_broker_with_the_reason(tmp_path):
    security = FleetSecurity(str(tmp_path / "sec"))
    security.init()
    profile = dict(catalog.load("rpi-pico-w"), tls={"fits": False, "why": "a TLS session needs 40 KB it lacks"})
    with pytest.raises(SecurityError, match="40 KB it lacks.*--insecure-plaintext"):
        nodelink.node_link("n1", profile, "mqtts://broker.lan", security=security)
    plain = nodelink.node_link("n1", profile, "mqtt://broker.lan:1884", security=security)
    assert plain.config["tls"] is False and plain.config["user"] == "n1" and plain.files == {}
    with pytest.raises(SecurityError, match="does not name broker.lan.*--broker-host broker.lan"):
        nodelink.node_link("n2", catalog.load("rpi4"), "mqtts://broker.lan", security=security)
    security.ensure_broker_cert(["broker.lan"])
    secure = nodelink.node_link("n2", catalog.load("rpi4"), "mqtts://broker.lan", security=security)
    assert secure.config["tls"] and secure.files["ca.der"] == security.ca_der()
    assert secure.config["password"] == security.node("n2").password


def test_mqtts_without_a_fleet_ca_is_a_clear_error(tmp_path):
    with pytest.raises(SecurityError, match="edgefleet init"):
        nodelink.node_link("n1", catalog.load("rpi4"), "mqtts://broker.lan", security=FleetSecurity(str(tmp_path / "none")))


def test_an_operator_kit_is_checked_and_never_joins_over_a_fleet_host(tmp_path):
    from edgefleet.controller.netutil import BrokerAddress
    from edgefleet.controller.security import kit
    from edgefleet.controller.security.material import FleetSecurity
    fleet = FleetSecurity(str(tmp_path / "fleet" / "security"))
    fleet.init()
    path = str(tmp_path / "op.kit")
    kit.write(path, kit.make(BrokerAddress.parse("mqtts://fleet.example:8883"), fleet, "ab" * 32))
    taken = kit.read(path)
    assert taken["broker_address"].host == "fleet.example" and taken["operator"]["name"] == "ef.operator"
    with pytest.raises(ConfigError, match="fleet host"):
        kit.join(taken, str(tmp_path / "fleet"), str(tmp_path / "config.toml"))
    (tmp_path / "config.toml").write_text('other = "kept"\n')
    kit.join(taken, str(tmp_path / "op"), str(tmp_path / "config.toml"))
    assert (tmp_path / "config.toml").read_text() == 'other = "kept"\nbroker = "mqtts://fleet.example:8883"\n'
    assert [p.name for p in FleetSecurity(str(tmp_path / "op" / "security")).principals.all()] == ["ef.operator"]
    for broken, why in (({"format": "x"}, "not an operator kit"),
                        (dict(taken, operator={"name": "node-a", "password": "p"}), "not the operator's"),
                        (dict(taken, ca_pem=""), "CA certificate is missing")):
        broken.pop("broker_address", None)
        (tmp_path / "bad.kit").write_text(json.dumps(broken))
        with pytest.raises(ConfigError, match=why):
            kit.read(str(tmp_path / "bad.kit"))
