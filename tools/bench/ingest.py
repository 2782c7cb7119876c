#!/usr/bin/env python3
"""Ingest benchmark: how many node messages a second the controller takes in, on one core,
against a bare paho subscriber reading the same messages from the same broker.

A real mosquitto; NODES simulated nodes registered with the controller through real hello
messages, one workload with a replica on each (so every result goes through the stream ledger's
ownership and exactly-once checks, then into the SQLite registry on disk, and is acknowledged).
The stream is results with a heartbeat per node after every 10 of its results, all QoS 1 (so the
broker keeps them for a subscriber that is away). Both consumers drain the same backlog: each
has a persistent session, disconnects, a publisher process puts the whole stream into the
broker, and the consumer reconnects; its rate is messages over the time from its first to its
last message. So the publisher's speed does not cap either number.

  raw_msgs_per_s  a bare paho subscriber (client loop thread, counting) draining the backlog
  msgs_per_s      ControllerService (paho thread + controller thread: one Python process, so one
                  core under the GIL) draining it: decoded, validated, ledger-checked, stored in
                  the SQLite registry on disk, acknowledged
  ratio           msgs_per_s / raw_msgs_per_s
  p99_ms          99th percentile from publish to handled by the controller, in a second run
                  paced at the 2,000 msg/s target (or half the drain rate, if lower), the
                  publisher process sharing the machine (a drain only measures its own queue)

Prints progress to stderr and one JSON line last on stdout.
Usage: .venv/bin/python tools/bench/ingest.py [--nodes 20] [--messages 20000]
"""
import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

from edgefleet import models
from edgefleet.controller.broker import MosquittoBroker
from edgefleet.controller.fleet.service import ControllerService


PACED_RATE = 2000.0


def node_ids(count):
    return ["n%03d" % i for i in range(count)]


def hello(node):
    return json.dumps({"v": 1, "node": node, "board": "rpi4", "runtime": "cpython", "fw": "0.1.0", "boot": 1,
                       "caps": {"heap": 1 << 30, "flash": 1 << 30, "backends": ["litert"], "models": ["digits_dense"]}})


def stream(nodes, total, skip=0):
    """(topic, payload template) in publish order, the send time's `up` filled in at publish
    time; skip: leave out the first `skip` messages (a later run continues the nodes' streams)."""
    out = []
    seq = {n: 0 for n in nodes}
    hb = {n: 0 for n in nodes}
    total += skip
    i = 0
    while len(out) < total:
        node = nodes[i % len(nodes)]
        i += 1
        seq[node] += 1
        s = seq[node]
        out.append(("ef/node/%s/result" % node, '{"v": 1, "node": "%s", "boot": 1, "seq": %d, "wl": "w", "up": %%d, '
                    '"label": 3, "score": 0.9, "us": 900, "truth": 3, "in": %d}' % (node, s, s - 1)))
        if s % 10 == 0:
            hb[node] += 1
            out.append(("ef/node/%s/hb" % node, '{"v": 1, "node": "%s", "boot": 1, "seq": %d, "up": %%d, "cpu": 20.0, '
                        '"mem_free": 1000, "mem_total": 2000, "power": {"src": "mains", "pct": null, "mw": null}, '
                        '"temp": null, "wl": [{"id": "w", "state": "running", "n": %d, "err": null}]}' % (node, hb[node], s)))
    return out[skip:total]


def publish(host, port, nodes, total, rate, t0, ready, skip):
    """Child process: publish the stream (rate None: flat out); `up` carries the send time."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ingest-pub-%d" % os.getpid())
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    msgs = stream(nodes, total, skip)
    ready.wait()
    start = time.time()
    last = None
    for i, (topic, template) in enumerate(msgs):
        if rate:
            due = start + i / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
        last = client.publish(topic, template % int((time.time() - t0) * 1000), qos=1)
    last.wait_for_publish(120)
    time.sleep(0.5)
    client.loop_stop()
    client.disconnect()


class Counter:
    def __init__(self, total):
        self.total = total
        self.count = 0
        self.first = self.last = None
        self.done = threading.Event()

    def hit(self):
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.count += 1
        self.last = now
        if self.count >= self.total:
            self.done.set()

    def rate(self):
        return (self.count - 1) / (self.last - self.first) if self.count > 1 and self.last > self.first else 0.0


def run_publisher(broker, nodes, total, rate, t0, skip=0):
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=publish, args=(broker.host, broker.port, nodes, total, rate, t0, ready, skip))
    proc.start()
    time.sleep(1.0)  # connected and the stream built
    ready.set()
    return proc


def backlog(client, broker, nodes, total, t0, skip=0):
    """Disconnect the persistent-session client, queue the stream in the broker, reconnect."""
    client.disconnect()
    client.loop_stop()  # a disconnect() by the user ends paho's network thread
    time.sleep(0.5)
    proc = run_publisher(broker, nodes, total, None, t0, skip)
    proc.join(300)
    client.reconnect()
    client.loop_start()


def raw_rate(broker, nodes, total, t0):
    counter = Counter(total)
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ingest-raw", clean_session=False)
    sub.on_message = lambda c, u, m: counter.hit()
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("ef/node/+/+", qos=1)
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    time.sleep(0.5)
    backlog(sub, broker, nodes, total, t0)
    counter.done.wait(300)
    sub.loop_stop()
    sub.disconnect()
    return counter


def controller_run(service, broker, nodes, total, rate, t0, skip=0):
    counter = Counter(total)
    latencies = []
    fleet = service.fleet
    handle = fleet.handle

    def timed(topic, payload):
        effects = handle(topic, payload)
        if topic.endswith("/result") or topic.endswith("/hb"):
            now = time.time()
            counter.hit()
            if rate:
                up = int(payload[payload.index(b'"up": ') + 6:].split(b",", 1)[0])
                latencies.append(now * 1000 - (t0 * 1000 + up))
        return effects

    fleet.handle = timed
    if rate is None:
        backlog(service.client, broker, nodes, total, t0, skip)
    else:
        proc = run_publisher(broker, nodes, total, rate, t0, skip)
    counter.done.wait(600)
    if rate is not None:
        proc.join(60)
    fleet.handle = handle
    return counter, latencies


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--messages", type=int, default=20000)
    args = ap.parse_args(argv)
    nodes = node_ids(args.nodes)
    workload = {"id": "w", "model": "digits_dense", "rate": 10.0, "replicas": args.nodes, "input": {"kind": "samples"},
                "resources": {"cpu_share": 1}}
    t0 = time.time()
    broker = MosquittoBroker().start()
    tmp = tempfile.mkdtemp(prefix="edgefleet-ingest-")
    try:
        raw = raw_rate(broker, nodes, args.messages, t0)
        print("bare paho subscriber: %d msgs at %.0f msg/s" % (raw.count, raw.rate()), file=sys.stderr)
        service = ControllerService(broker.host, broker.port, db_path=os.path.join(tmp, "fleet.db"),
                                    manifests=models.manifests(), workloads=[workload])
        # A persistent session, so the broker keeps the backlog while it is away.
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ctrl", clean_session=False)
        client.on_connect, client.on_disconnect = service.client.on_connect, service.client.on_disconnect
        client.on_message = service.client.on_message
        client.max_queued_messages_set(0)
        service.client = client
        service.start()
        try:
            reg = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ingest-hello")
            reg.connect(broker.host, broker.port)
            reg.loop_start()
            for node in nodes:
                reg.publish("ef/node/%s/hello" % node, hello(node), qos=1).wait_for_publish(10)
            deadline = time.time() + 30
            while time.time() < deadline:
                snap = service.snapshot()
                if snap and len(snap["workloads"][0]["nodes"]) == args.nodes:
                    break
                time.sleep(0.2)
            else:
                raise SystemExit("the controller did not place the workload on every node")
            reg.loop_stop()
            reg.disconnect()
            flat, _ = controller_run(service, broker, nodes, args.messages, None, t0)
            print("controller: %d msgs at %.0f msg/s" % (flat.count, flat.rate()), file=sys.stderr)
            # The paced run continues every node's stream where the flat-out run stopped.
            paced_rate = max(100.0, min(PACED_RATE, flat.rate() / 2))
            paced, latencies = controller_run(service, broker, nodes, min(args.messages, int(paced_rate * 10)),
                                              paced_rate, t0, skip=args.messages)
            print("paced run: %d msgs handled" % paced.count, file=sys.stderr)
            latencies.sort()
            p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else None
            print("controller paced at %.0f msg/s: p50 %.1f ms, p99 %.1f ms" % (
                paced_rate, latencies[len(latencies) // 2], p99), file=sys.stderr)
            snap = service.snapshot()
            print("stored results: %d" % snap["results_received"], file=sys.stderr)
        finally:
            service.stop()
    finally:
        broker.stop()
    print(json.dumps({"msgs_per_s": round(flat.rate()), "raw_msgs_per_s": round(raw.rate()),
                      "ratio": round(flat.rate() / raw.rate(), 3) if raw.rate() else None,
                      "p99_ms": round(p99, 1) if p99 is not None else None}))


if __name__ == "__main__":
    main()
