"""A retained message far over its kind's limit (a forged 16 KB `assign`) must not cost an ESP32
node its link: the real MicroPython interpreter at the board profile's heap, a real broker."""
import paho.mqtt.client as mqtt
import pytest

from edgefleet.controller.sim.nodeprobe import PREFIX, NodeProbe
from edgefleet.firmware import protocol

pytestmark = [pytest.mark.e2e, pytest.mark.micropython]


def test_a_retained_16kb_assign_leaves_an_esp32_node_connected_and_working(mosquitto, tmp_path):
    node_id = "big-esp32"
    topic = protocol.node_topic(PREFIX, node_id, "assign")
    forger = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="forger")
    forger.connect(mosquitto.host, mosquitto.port)
    forger.loop_start()
    try:
        # Under the MQTT client's old 16384-byte packet ceiling: read into one buffer, it was a
        # MemoryError on the ESP32 heap, a dropped link, and the same again at every reconnect.
        forger.publish(topic, b'{"v": 1, "epoch": 1, "wl": [' + b" " * 16000 + b"]}", qos=1, retain=True).wait_for_publish(5)
        with NodeProbe(mosquitto, str(tmp_path), node_id, "esp32").start() as probe:
            assert probe.wait_for(lambda p: p.boot_event(), 30), "no boot event from the node"
            assert probe.wait_for(lambda p: len(p.of_kind("hb")) >= 5, 20), "heartbeats stopped"
            probe.assign([])   # the controller's real assignment replaces the forged one
            seen = len(probe.of_kind("hb"))
            assert probe.wait_for(lambda p: len(p.of_kind("hb")) >= seen + 3, 10), "heartbeats stopped"
            hellos = probe.of_kind("hello")
            offline = [s for s in probe.of_kind("status") if s["state"] == "offline"]
            assert len(hellos) == 1 and not offline, "the node reconnected %d times" % (len(hellos) - 1)
    finally:
        forger.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        forger.loop_stop()
        forger.disconnect()
