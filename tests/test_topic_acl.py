"""The broker's ACL for `topic` workload inputs, on a real secured mosquitto (dynamic security,
TLS, the fleet's logins; controller/security/acl.py): an operator's login publishes a workload's
inputs and any node's login reads them; a node's login cannot feed a workload inputs, and the
controller's cannot read them."""
import queue
import time

import pytest

from edgefleet.controller.broker import SecureMosquitto
from edgefleet.controller.mqttlink import BrokerLink
from edgefleet.controller.netutil import BrokerAddress
from edgefleet.controller.security.material import FleetSecurity
from edgefleet.controller.security.principals import CONTROLLER, OPERATOR
from edgefleet.firmware import protocol

pytestmark = pytest.mark.e2e


def _client(broker, security, role=None, node=None):
    if node is not None:
        principal = security.node(node)
        client = BrokerLink(BrokerAddress.parse(broker.url), OPERATOR, security).client(node)
        client.username_pw_set(principal.name, principal.password)
    else:
        client = BrokerLink(BrokerAddress.parse(broker.url), role, security).client("t-" + role)
    inbox = queue.Queue()
    client.on_message = lambda c, u, m: inbox.put(m.payload)
    granted = queue.Queue()
    client.on_subscribe = lambda c, u, mid, codes, p: granted.put([int(getattr(r, "value", r)) for r in codes])
    client.connect(broker.local_host, broker.port)
    client.loop_start()
    return client, inbox, granted


def test_operators_feed_workload_inputs_that_nodes_read_and_nobody_else(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))
    security = FleetSecurity()
    security.init()
    security.node("node-a")
    broker = SecureMosquitto(security).start()
    clients = []
    try:
        node, node_inbox, node_granted = _client(broker, security, node="node-a")
        ctrl, ctrl_inbox, ctrl_granted = _client(broker, security, role=CONTROLLER)
        operator, _, _ = _client(broker, security, role=OPERATOR)
        clients += [node, ctrl, operator]
        topic = protocol.input_topic("ef", "cam")
        node.subscribe(topic, qos=1)
        ctrl.subscribe(topic, qos=1)
        assert node_granted.get(timeout=10) == [1]
        assert ctrl_granted.get(timeout=10)[0] >= 0x80, "the controller may not read inputs"
        good = protocol.encode("input", {"v": 1, "seq": 0, "data": "AAAAAA=="})
        forged = protocol.encode("input", {"v": 1, "seq": 1, "data": "/////w=="})
        operator.publish(topic, good, qos=1).wait_for_publish(5)
        node.publish(topic, forged, qos=1).wait_for_publish(5)     # a node feeding inputs: dropped
        time.sleep(1.0)
        got = []
        while not node_inbox.empty():
            got.append(node_inbox.get())
        assert got == [good.encode()], got
        assert ctrl_inbox.empty()
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        broker.stop()
