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

tools/bench/tls.py runs the same drain against the fleet's own broker (logins, ACLs, TLS) through
Endpoint, start_controller and controller_run below.
"""
import argparse
import json
import multiprocessing
import os
import ssl
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

from edgefleet import models
from edgefleet.controller.broker import MosquittoBroker
from edgefleet.controller.fleet.service import ControllerService


PACED_RATE = 2000.0


class Endpoint:
    """Where the benchmark's own clients (publisher, bare subscriber, registration) connect, and
    as whom; plain data, so the publisher process can take it.

    On an open broker (no `logins`) every client is anonymous and one publisher connection
    carries every node's messages. On the fleet's broker (controller/broker.py SecureMosquitto)
    each node publishes as itself - its login, its node id as client id, as the broker's ACLs
    require - so the publisher opens one connection per node: over TLS, verified against the
    fleet CA, when `ca_cert` is given, plaintext otherwise."""

    def __init__(self, host, port, ca_cert=None, logins=None):
        self.host = host
        self.port = port
        self.ca_cert = ca_cert
        self.logins = dict(logins or {})  # node id -> password

    @classmethod
    def of(cls, broker):
        return cls(broker.host, broker.port)

    def client(self, client_id, node=None, clean_session=True):
        """A paho client; as `node` (its login, and its id as client id) on the fleet's broker."""
        if node is not None and self.logins:
            client_id = node
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        if self.ca_cert:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_cert)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            client.tls_set_context(ctx)
        if node is not None and self.logins:
            client.username_pw_set(node, self.logins[node])
        return client

    def node_clients(self, nodes, shared_id):
        """{node: client}: one client per node with logins, else one anonymous client for all."""
        if self.logins:
            return {node: self.client(node, node=node) for node in nodes}
        shared = self.client(shared_id)
        return {node: shared for node in nodes}


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


def publish(endpoint, nodes, total, rate, t0, ready, skip):
    """Child process: publish the stream (rate None: flat out); `up` carries the send time."""
    clients = endpoint.node_clients(nodes, "ingest-pub-%d" % os.getpid())
    distinct = list({id(c): c for c in clients.values()}.values())
    for client in distinct:
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.connect(endpoint.host, endpoint.port)
        client.loop_start()
    msgs = stream(nodes, total, skip)
    ready.wait()
    start = time.time()
    last = {}
    for i, (topic, template) in enumerate(msgs):
        if rate:
            due = start + i / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
        client = clients[topic.split("/")[2]]
        last[id(client)] = client.publish(topic, template % int((time.time() - t0) * 1000), qos=1)
    for info in last.values():
        info.wait_for_publish(120)
    time.sleep(0.5)
    for client in distinct:
        client.disconnect()   # first: the network thread then ends at once, not at its next 1 s poll
    for client in distinct:
        client.loop_stop()


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


def run_publisher(endpoint, nodes, total, rate, t0, skip=0):
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=publish, args=(endpoint, nodes, total, rate, t0, ready, skip))
    proc.start()
    time.sleep(1.0)  # connected and the stream built
    ready.set()
    return proc


def finish_publisher(proc, timeout):
    """Wait for the publisher process; stop it (by its pid) if it is still running after `timeout`."""
    proc.join(timeout)
    if proc.is_alive():
        proc.terminate()
        proc.join(5)


def backlog(client, endpoint, nodes, total, t0, skip=0):
    """Disconnect the persistent-session client, queue the stream in the broker, reconnect."""
    client.disconnect()
    client.loop_stop()  # a disconnect() by the user ends paho's network thread
    time.sleep(0.5)
    proc = run_publisher(endpoint, nodes, total, None, t0, skip)
    finish_publisher(proc, 300)
    client.reconnect()
    client.loop_start()


def raw_rate(endpoint, nodes, total, t0):
    counter = Counter(total)
    sub = endpoint.client("ingest-raw", clean_session=False)
    sub.on_message = lambda c, u, m: counter.hit()
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("ef/node/+/+", qos=1)
    sub.connect(endpoint.host, endpoint.port)
    sub.loop_start()
    time.sleep(0.5)
    backlog(sub, endpoint, nodes, total, t0)
    counter.done.wait(300)
    sub.loop_stop()
    sub.disconnect()
    return counter


def controller_run(service, endpoint, nodes, total, rate, t0, skip=0):
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
        backlog(service.client, endpoint, nodes, total, t0, skip)
    else:
        proc = run_publisher(endpoint, nodes, total, rate, t0, skip)
    counter.done.wait(600)
    if rate is not None:
        finish_publisher(proc, 60)
    fleet.handle = handle
    return counter, latencies


def register(endpoint, nodes):
    """Every node says hello (as itself, on the fleet's broker)."""
    clients = endpoint.node_clients(nodes, "ingest-hello")
    distinct = list({id(c): c for c in clients.values()}.values())
    for client in distinct:
        client.connect(endpoint.host, endpoint.port)
        client.loop_start()
    try:
        for node in nodes:
            clients[node].publish("ef/node/%s/hello" % node, hello(node), qos=1).wait_for_publish(10)
    finally:
        for client in distinct:
            client.disconnect()
        for client in distinct:
            client.loop_stop()


def start_controller(endpoint, nodes, db_path, client=None, ctrl_id="ctrl"):
    """A started ControllerService on a persistent session (so the broker keeps the backlog while
    it is away), with every node registered and the workload placed on each. `client`: the paho
    client to run it on (tools/bench/tls.py: the controller's own BrokerLink client); by default
    an anonymous one from `endpoint`."""
    workload = {"id": "w", "model": "digits_dense", "rate": 10.0, "replicas": len(nodes), "input": {"kind": "samples"},
                "resources": {"cpu_share": 1}}
    service = ControllerService(endpoint.host, endpoint.port, db_path=db_path, manifests=models.manifests(),
                                workloads=[workload], ctrl_id=ctrl_id)
    if client is None:
        client = endpoint.client(ctrl_id, clean_session=False)
    client.on_connect, client.on_disconnect = service.client.on_connect, service.client.on_disconnect
    client.on_message = service.client.on_message
    client.max_queued_messages_set(0)
    service.client = client
    service.start()
    try:
        register(endpoint, nodes)
        deadline = time.time() + 30
        while time.time() < deadline:
            snap = service.snapshot()
            if snap and len(snap["workloads"][0]["nodes"]) == len(nodes):
                break
            time.sleep(0.2)
        else:
            raise SystemExit("the controller did not place the workload on every node")
    except BaseException:
        service.stop()
        raise
    return service


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--messages", type=int, default=20000)
    args = ap.parse_args(argv)
    nodes = node_ids(args.nodes)
    t0 = time.time()
    broker = MosquittoBroker().start()
    endpoint = Endpoint.of(broker)
    tmp = tempfile.mkdtemp(prefix="edgefleet-ingest-")
    try:
        raw = raw_rate(endpoint, nodes, args.messages, t0)
        print("bare paho subscriber: %d msgs at %.0f msg/s" % (raw.count, raw.rate()), file=sys.stderr)
        service = start_controller(endpoint, nodes, os.path.join(tmp, "fleet.db"))
        try:
            flat, _ = controller_run(service, endpoint, nodes, args.messages, None, t0)
            print("controller: %d msgs at %.0f msg/s" % (flat.count, flat.rate()), file=sys.stderr)
            # The paced run continues every node's stream where the flat-out run stopped.
            paced_rate = max(100.0, min(PACED_RATE, flat.rate() / 2))
            paced, latencies = controller_run(service, endpoint, nodes, min(args.messages, int(paced_rate * 10)),
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
