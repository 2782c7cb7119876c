"""The fleet's real traffic, read by a client nobody here wrote (mosquitto_sub), validated
against the protocol document: every message parses, matches its kind's schema and limit, and
travels at the QoS the document gives its topic. The document's topic table itself is checked
against the schemas the code enforces."""
import os
import re
import shutil
import subprocess
import time

import pytest

from edgefleet import models
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.simfleet import SimFleet
from edgefleet.controller import opwire
from edgefleet.firmware import protocol

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOL_DOC = os.path.join(REPO, "docs", "protocol.md")


def doc_topic_table():
    """{kind: (qos, retained, max bytes)} from the topic table in docs/protocol.md."""
    rows = {}
    with open(PROTOCOL_DOC) as f:
        for line in f:
            m = re.match(r"\|\s*`[^`]+`\s*\|[^|]+\|\s*(\d)\s*\|\s*(yes|no)[^|]*\|\s*`(\w+)`\s*\|\s*(\d+)\s*\|", line)
            if m:
                rows[m.group(3)] = (int(m.group(1)), m.group(2) == "yes", int(m.group(4)))
    return rows


def test_protocol_document_and_code_agree():
    table = doc_topic_table()
    assert set(table) == set(protocol.kinds()), "topic table kinds differ from the code's schemas"
    for kind, (qos, retained, limit) in table.items():
        assert protocol.delivery(kind) == (qos, retained), kind
        assert protocol.limit(kind) == limit, kind
    with open(PROTOCOL_DOC) as f:
        doc = f.read()
    for kind in protocol.kinds():
        for item in protocol.fields(kind).split():
            name = item.partition(":")[0]
            assert re.search(r"\|\s*%s\s*\|" % re.escape(name), doc), "field %s of %s is not documented" % (name, kind)


@pytest.mark.e2e
def test_live_fleet_traffic_matches_the_schemas(mosquitto, tmp_path):
    sub = shutil.which("mosquitto_sub")
    assert sub, "mosquitto_sub is missing (Debian's mosquitto-clients)"
    layout = [("mcu-t", "rpi-pico-w"), ("pi-t", "rpi-zero-2w")]
    workloads = [{"id": "d", "model": "digits_dense", "rate": 5.0, "replicas": 2, "input": {"kind": "samples"}}]
    capture = subprocess.Popen([sub, "-h", mosquitto.host, "-p", str(mosquitto.port), "-q", "1", "-t", "ef/#",
                                "-F", "%t\t%q\t%p"], stdout=subprocess.PIPE, text=True)
    controller = ControllerService(mosquitto.host, mosquitto.port, db_path=str(tmp_path / "db"),
                                   manifests=models.manifests(), workloads=workloads).start()
    fleet = SimFleet(str(tmp_path / "fleet"), mosquitto.host, mosquitto.port, layout, keepalive=2).start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            snap = controller.snapshot()
            if snap and len(snap["nodes"]) == 2 and all(n["results"] >= 5 for n in snap["nodes"]):
                break
            time.sleep(0.3)
        fleet.board("mcu-t").power_off()  # its Last Will is traffic too
        time.sleep(2)
    finally:
        fleet.stop()
        controller.stop()
        capture.terminate()
        output = capture.communicate(timeout=10)[0]
    seen = {}
    for line in output.splitlines():
        topic, qos, payload = line.split("\t", 2)
        node, kind = opwire.parse_topic("ef", topic)
        if payload == "":
            continue  # a cleared retained message
        msg = protocol.decode(kind, payload.encode())
        if "node" in msg:
            assert msg["node"] == node, line
        assert int(qos) == protocol.delivery(kind)[0], "QoS %s on %s" % (qos, topic)
        seen[kind] = seen.get(kind, 0) + 1
    for kind in ("hello", "status", "hb", "result", "event", "log", "assign", "ack", "ctrl_status", "audit"):
        assert seen.get(kind), "no %s message seen (%s)" % (kind, seen)
