# Connects the node's MQTT client over TLS, as a node does, and says how it went; run under
# MicroPython and CPython by tests/test_security.py.
#
#   tls_probe.py HOST PORT CA_DER USER PASSWORD
import asyncio
import sys

from firmware.errors import MQTTError
from firmware.mqtt import MQTTClient
from firmware.tlslink import client_context


async def main(host, port, ca, user, password):
    client = MQTTClient(user, host, int(port), user=user, password=password, tls=client_context(ca))
    try:
        await client.connect()
    except MQTTError as e:
        print("refused: %s: %s" % (type(e).__name__, e))
        return
    await client.publish("ef/node/%s/event" % user, b"{}", 1, False)
    print("connected and published")
    await client.disconnect()


asyncio.run(main(*sys.argv[1:6]))
