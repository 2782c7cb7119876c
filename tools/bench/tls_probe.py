# Runs ON the MicroPython board (the unix port in the benchmark, at an MCU heap): what the node's
# MQTT link costs in memory and time, over TLS (firmware/tlslink.py) or plaintext, with the
# node's own client (firmware/mqtt.py) and its broker login. Usage:
#   micropython tls_probe.py tls|plain HOST PORT USER PASSWORD CA_PATH SERVER_NAME CONNECTS -> one JSON line
#
# Memory is read at three points: before the link (modules imported, heap collected), after
# CONNACK (the window: SSLContext with the CA loaded, TCP connect, TLS handshake, MQTT
# CONNECT/CONNACK), and with the link open after one QoS1 publish round trip, heap collected.
#   gc_window   GC-heap bytes allocated in the window, with the collector off: an upper bound
#               of the GC heap the window needs at once
#   gc_steady   GC-heap bytes still held with the link open
#   malloc_*    bytes held outside the GC heap (the unix port's mbedTLS uses the C library's
#               malloc), read from tools/bench/malloc_count.c when it is preloaded: the peak
#               since the window opened, what is held with the link open, the sizes of the
#               large allocations the window made (record buffers, the certificate chain)
# Time: CONNECTS more connects on the same SSLContext (as a node reconnects), each from the
# TCP connect to CONNACK, then a clean disconnect.
import asyncio
import gc
import json
import os
import sys

from firmware.clock import ticks_diff, ticks_us
from firmware.mqtt import MQTTClient
from firmware.tlslink import client_context


def malloc_counter():
    """(live, peak, allocations, [big sizes]) from the preloaded counter, or None."""
    text = os.getenv("EF_MALLOC")
    if not text:
        return None
    parts = text.split(" ")
    big = [int(s) for s in parts[3].split(",")] if len(parts) > 3 and parts[3] else []
    return int(parts[0]), int(parts[1]), int(parts[2]), big


def malloc_reset():
    os.getenv("EF_MALLOC_RESET")


async def main():
    mode, host, port, user, password, ca_path, server_name, connects = sys.argv[1:9]
    port, connects = int(port), int(connects)
    tls = mode == "tls"
    topic = "ef/node/%s/hb" % user
    out = {"mode": mode, "heap_total": gc.mem_alloc() + gc.mem_free()}

    gc.collect()
    gc_base = gc.mem_alloc()
    malloc_reset()
    before = malloc_counter()
    gc.disable()
    ctx = client_context(ca_path) if tls else None
    client = MQTTClient(user, host, port, user=user, password=password, keepalive=60, tls=ctx,
                        server_hostname=server_name)
    t0 = ticks_us()
    await client.connect()
    out["first_connect_s"] = ticks_diff(ticks_us(), t0) / 1e6
    sock = getattr(client._link.writer, "s", None)
    if tls and hasattr(sock, "cipher"):
        out["cipher"] = sock.cipher()
    out["gc_window"] = gc.mem_alloc() - gc_base
    out["gc_free_in_window"] = gc.mem_free()   # a collection could not have run: the heap never filled
    gc.enable()
    window = malloc_counter()
    await client.publish(topic, b'{"probe": 1}', qos=1)
    gc.collect()
    out["gc_steady"] = gc.mem_alloc() - gc_base
    held = malloc_counter()
    if before is not None:
        out["malloc_window_peak"] = window[1] - before[0]
        out["malloc_peak"] = held[1] - before[0]   # the publish included
        out["malloc_steady"] = held[0] - before[0]
        out["malloc_big"] = window[3]
    await client.disconnect()
    client = None
    gc.collect()
    if before is not None:
        out["malloc_after_close"] = malloc_counter()[0] - before[0]   # with ctx still held
    out["gc_after_close"] = gc.mem_alloc() - gc_base

    times = []
    for i in range(connects):
        client = MQTTClient(user, host, port, user=user, password=password, keepalive=60, tls=ctx,
                            server_hostname=server_name)
        t0 = ticks_us()
        await client.connect()
        times.append(ticks_diff(ticks_us(), t0) / 1e6)
        await client.disconnect()
        client = None
        gc.collect()
    out["connect_s"] = times
    print(json.dumps(out))


asyncio.run(main())
