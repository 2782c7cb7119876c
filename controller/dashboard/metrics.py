"""The fleet for Prometheus (`/metrics`): per-node gauges, per-workload counters and the
controller's ingest and tick timings, through prometheus_client's own exposition.

A collector reads the live feed at scrape time (the last tick's snapshot, the controller's
timing histograms) rather than keeping metric objects updated on every heartbeat, and lives in
a registry of its own, so two controllers in one process (tests) never share series.
"""
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest


class FleetCollector:
    def __init__(self, feed, hub):
        self.feed = feed
        self.hub = hub

    def collect(self):
        snap = self.feed.snapshot or {"nodes": [], "workloads": []}
        up = GaugeMetricFamily("edgefleet_node_up", "1 while the node is online (or degraded, safe), 0 offline",
                               labels=["node", "board", "runtime"])
        gauges = {
            "cpu": GaugeMetricFamily("edgefleet_node_cpu_ratio", "the node's CPU load, 0..1", labels=["node"]),
            "mem_free": GaugeMetricFamily("edgefleet_node_heap_free_bytes", "free heap or memory", labels=["node"]),
            "battery": GaugeMetricFamily("edgefleet_node_battery_percent", "battery charge", labels=["node"]),
            "rps": GaugeMetricFamily("edgefleet_node_results_per_second", "results stored per second, last 10 s",
                                     labels=["node"]),
            "last_seen": GaugeMetricFamily("edgefleet_node_last_seen_timestamp_seconds", "when it was last heard",
                                           labels=["node"]),
        }
        results = CounterMetricFamily("edgefleet_node_results", "results stored from the node", labels=["node"])
        for node in snap["nodes"]:
            nid = node["id"]
            up.add_metric([nid, node["board"], node["runtime"]], 0.0 if node["state"] == "offline" else 1.0)
            battery = (node.get("power") or {}).get("pct")
            for key, value in (("cpu", node.get("cpu")), ("mem_free", node.get("mem_free")), ("battery", battery),
                               ("rps", node.get("rps")), ("last_seen", node.get("last_seen"))):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    gauges[key].add_metric([nid], float(value))
            results.add_metric([nid], float(node.get("results") or 0))
        yield up
        yield from gauges.values()
        yield results
        wl_results = CounterMetricFamily("edgefleet_workload_results", "results stored", labels=["workload"])
        replicas = GaugeMetricFamily("edgefleet_workload_replicas_running", "nodes it is placed on", labels=["workload"])
        accuracy = GaugeMetricFamily("edgefleet_workload_accuracy_ratio", "share of results matching their truth",
                                     labels=["workload"])
        for wl in snap["workloads"]:
            wl_results.add_metric([wl["id"]], float(wl["results"]))
            replicas.add_metric([wl["id"]], float(len(wl["nodes"])))
            if wl.get("accuracy") is not None:
                accuracy.add_metric([wl["id"]], float(wl["accuracy"]))
        yield wl_results
        yield replicas
        yield accuracy
        messages = CounterMetricFamily("edgefleet_controller_messages", "messages the controller handled",
                                       labels=["kind"])
        for kind, count in sorted(self.feed.messages.copy().items()):
            messages.add_metric([kind], float(count))
        yield messages
        yield _histogram("edgefleet_controller_ingest_seconds", "handling one message, from the inbox to published",
                         self.feed.ingest)
        yield _histogram("edgefleet_controller_tick_seconds", "one tick: detector, placement, migration, snapshot",
                         self.feed.ticks)
        yield GaugeMetricFamily("edgefleet_dashboard_streams", "browsers following the live stream",
                                value=float(self.hub.subscribers()))


def _histogram(name, doc, timings):
    counts = list(timings.counts)
    buckets, running = [], 0
    for bound, count in zip(list(timings.buckets) + [float("inf")], counts):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=timings.total)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, feed, hub):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FleetCollector(feed, hub))

    def render(self):
        return generate_latest(self.registry)
