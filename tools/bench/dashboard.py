#!/usr/bin/env python3
"""Dashboard benchmark: how fast a heartbeat shows in a real browser, and what serving it costs.

A real mosquitto (open, plaintext), the controller with its dashboard in this process (as
`edgefleet controller --http` runs them), NODES nodes speaking the wire protocol from a separate
publisher process: a hello each, then one heartbeat a second per node, spread over the second
with 20% jitter (a protocol-level simulation: no inference runs, so the machine's cores are the
controller's and the browser's). Debian's headless Chromium (Selenium, /usr/bin/chromedriver)
keeps the fleet page open on the live stream for the whole run.

  update_latency_p99_ms  99th percentile from the publisher handing a heartbeat to the broker
                         (so: at most the broker hop more than "reaching the controller") to the
                         page's DOM showing that heartbeat's seq on the node's row (a
                         MutationObserver in the page notes Date.now(); one clock, one machine)
  server_cpu_pct         CPU the dashboard costs, as % of one core, over the measured window:
                         the web server's threads (uvicorn, its registry reader; from
                         /proc/self/task) plus the time the controller's thread spent in the
                         dashboard's hooks (LiveFeed.cpu_s); process_cpu_pct is the whole
                         process, controller included
  updates_missed         heartbeats sent within the window (a second from either edge) that the
                         page never showed
  page_weight_kb         what the page loaded (navigation plus resources, the stream excluded),
                         from the browser's Performance API
  history_bytes_per_node_day  registry bytes one node's telemetry history adds a day: samples
                         a day (both tiers) x bytes a sample, measured on a registry filled with
                         full retention for NODES nodes (history_bound_mb: all NODES nodes at
                         full retention, 30 days)

Prints progress to stderr and one JSON line last on stdout.
Usage: .venv/bin/python tools/bench/dashboard.py [--nodes 50] [--duration 30]
"""
import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

from edgefleet import models
from edgefleet.controller.broker import MosquittoBroker
from edgefleet.controller.dashboard import history
from edgefleet.controller.dashboard.server import dashboard_for
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.store import open_registry

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
JITTER = 0.2
WARMUP_S = 5.0
TICKS_PER_S = os.sysconf("SC_CLK_TCK")

# In the page: note when each row's heartbeat seq changes.
OBSERVE = """
window.__seen = [];
new MutationObserver((records) => {
  const now = Date.now() / 1000;
  for (const r of records) {
    const seq = r.target.dataset.hbSeq;
    if (seq) window.__seen.push([r.target.dataset.node, +seq, now]);
  }
}).observe(document.querySelector('#nodes tbody'), {attributes: true, attributeFilter: ['data-hb-seq'], subtree: true});
"""
PAGE_WEIGHT = """
const nav = performance.getEntriesByType('navigation')[0];
let total = nav ? nav.transferSize || nav.encodedBodySize : 0;
for (const r of performance.getEntriesByType('resource')) if (!r.name.endsWith('/stream')) total += r.transferSize || r.encodedBodySize;
return total;
"""


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def node_ids(count):
    return ["pico-%02d" % i for i in range(count)]


def hello(node):
    return json.dumps({"v": 1, "node": node, "board": "rpi-pico-w", "runtime": "micropython", "fw": "0.1.0",
                       "boot": 1, "slot": "slot_a",
                       "caps": {"heap": 200_000, "flash": 1 << 20, "backends": ["engine"], "models": []}})


def heartbeat(node, seq, up, rng):
    return json.dumps({"v": 1, "node": node, "boot": 1, "seq": seq, "up": up, "cpu": round(rng.uniform(0.05, 0.6), 3),
                       "mem_free": rng.randrange(60_000, 120_000), "mem_total": 200_000,
                       "power": {"src": "battery", "pct": round(90 - seq * 0.01, 2), "mw": 120.0}, "temp": 31.0,
                       "wl": []})


def publish(host, port, nodes, stop, sent_queue, seed):
    """Child process: hellos, then a heartbeat a second per node with jitter until `stop` is
    set; then reports {node: {seq: send time}} on sent_queue."""
    rng = random.Random(seed)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-dashboard-pub")
    client.max_inflight_messages_set(1000)
    client.connect(host, port)
    client.loop_start()
    for node in nodes:
        client.publish("ef/node/%s/hello" % node, hello(node), qos=1).wait_for_publish(10)
    started = time.time()
    # Each node's phase within the second, so the heartbeats spread like a fleet's.
    next_at = {node: started + 0.5 + i / len(nodes) for i, node in enumerate(nodes)}
    seq = {node: 0 for node in nodes}
    sent = {node: {} for node in nodes}
    while not stop.is_set():
        node = min(next_at, key=next_at.get)
        delay = next_at[node] - time.time()
        if delay > 0:
            time.sleep(delay)
        seq[node] += 1
        up = int((time.time() - started) * 1000)
        sent[node][seq[node]] = time.time()
        client.publish("ef/node/%s/hb" % node, heartbeat(node, seq[node], up, rng), qos=0)
        next_at[node] += 1.0 + rng.uniform(-JITTER, JITTER)
    client.loop_stop()
    client.disconnect()
    sent_queue.put(sent)


def thread_cpu_s(native_ids):
    total = 0
    for tid in native_ids:
        try:
            with open("/proc/self/task/%d/stat" % tid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])   # utime, stime
    return total / TICKS_PER_S


def dashboard_threads():
    return [t.native_id for t in threading.enumerate() if t.name.startswith("edgefleet-dashboard")]


def bytes_per_sample(folder, nodes):
    """A registry filled with full retention for `nodes` nodes: bytes a sample."""
    path = os.path.join(folder, "history.db")
    registry = open_registry(path)
    registry.commit()
    empty = os.path.getsize(path)
    now = int(time.time())
    rows = [(node, res, ts, 0.4321, 123456, 87.5, 4.5) for node in node_ids(nodes)
            for res, kept in history.TIERS for ts in range(now - kept, now, res)]
    registry.put_samples(rows)
    registry.commit()
    registry.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    registry.close()
    return (os.path.getsize(path) - empty) / len(rows)


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1200"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def run(nodes=50, duration=30.0, seed=1):
    folder = tempfile.mkdtemp(prefix="edgefleet-bench-dashboard-")
    broker = MosquittoBroker().start()
    dashboard = dashboard_for("127.0.0.1:0", state_dir=folder)
    service = ControllerService(broker.host, broker.port, db_path=os.path.join(folder, "fleet.db"),
                                manifests=models.manifests(), workloads=[], observer=dashboard.feed)
    driver = publisher = None
    try:
        service.start()
        dashboard.start(service)
        ids = node_ids(nodes)
        sent_queue, stop = multiprocessing.Queue(), multiprocessing.Event()
        publisher = multiprocessing.Process(target=publish, args=(broker.host, broker.port, ids, stop, sent_queue,
                                                                  seed))
        publisher.start()
        driver = browser()
        driver.get(dashboard.url)
        deadline = time.monotonic() + 30
        while driver.execute_script("return document.querySelectorAll('#nodes tr[data-node]').length") < nodes:
            if time.monotonic() > deadline:
                raise SystemExit("the page never showed %d nodes" % nodes)
            time.sleep(0.2)
        driver.execute_script(OBSERVE)
        log("page shows %d nodes; warming up %.0f s" % (nodes, WARMUP_S))
        time.sleep(WARMUP_S)
        driver.execute_script("window.__seen = []")
        threads = dashboard_threads()
        cpu0, feed0, proc0, wall0 = thread_cpu_s(threads), dashboard.feed.cpu_s, time.process_time(), time.monotonic()
        time.sleep(duration)
        cpu1, feed1, proc1, wall1 = thread_cpu_s(threads), dashboard.feed.cpu_s, time.process_time(), time.monotonic()
        seen = driver.execute_script("return window.__seen")
        page_bytes = driver.execute_script(PAGE_WEIGHT)
        stop.set()
        sent = sent_queue.get(timeout=30)
        publisher.join(10)
    finally:
        if driver is not None:
            driver.quit()
        if publisher is not None and publisher.is_alive():
            publisher.terminate()
        dashboard.stop()
        service.stop()
        broker.stop()
    latencies = [(at - sent[node][seq]) * 1000 for node, seq, at in seen if seq in sent.get(node, {})]
    # Heartbeats sent within the window that the page never showed (a lost update, not a slow one).
    shown = {(node, seq) for node, seq, _ in seen}
    window = (time.time() - (time.monotonic() - wall0), time.time() - (time.monotonic() - wall1))
    missed = sum(1 for node, seqs in sent.items() for seq, at in seqs.items()
                 if window[0] + 1.0 <= at <= window[1] - 1.0 and (node, seq) not in shown)
    if not latencies:
        raise SystemExit("the page showed no heartbeat the publisher sent")
    wall = wall1 - wall0
    per_sample = bytes_per_sample(folder, nodes)
    expected = nodes * duration
    log("%d heartbeat updates seen on the page in %.0f s (%.0f sent); p50 %.0f ms" % (
        len(latencies), wall, expected, percentile(latencies, 0.5)))
    return {
        "nodes": nodes,
        "update_latency_p99_ms": round(percentile(latencies, 0.99), 1),
        "server_cpu_pct": round(100 * ((cpu1 - cpu0) + (feed1 - feed0)) / wall, 2),
        "page_weight_kb": round(page_bytes / 1024, 1),
        "history_bytes_per_node_day": round(history.rows_per_node_day() * per_sample),
        "update_latency_p50_ms": round(percentile(latencies, 0.5), 1),
        "updates_seen": len(latencies),
        "updates_missed": missed,
        "process_cpu_pct": round(100 * (proc1 - proc0) / wall, 2),
        "history_bytes_per_sample": round(per_sample, 1),
        "history_bound_mb": round(nodes * history.ROWS_PER_NODE * per_sample / 1e6, 1),
        "duration_s": round(wall, 1),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds (after a warm-up)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    print(json.dumps(run(args.nodes, args.duration, args.seed)))


if __name__ == "__main__":
    main()
