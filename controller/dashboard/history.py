"""Telemetry history for the dashboard's plots, kept in the registry (Registry.put_samples) so a
plot still shows the last hour after the controller restarts.

Heartbeats arrive about once a second per node; storing each would be 86,400 rows per node and
day. Instead the recorder averages them into buckets in memory and writes one sample per
bucket, at two resolutions, each with its own retention:

  TIERS  10 s buckets kept 24 h (the hour plots, and a day of detail)
         300 s buckets kept 30 days (the long view)

That is 8,640 + 8,640 = 17,280 rows per node at steady state, whatever the heartbeat rate, so
the disk a fleet's history takes is bounded by its node count (disk_bound_bytes): at about 61
bytes a sample (measured: a registry filled with full retention for 10-character node ids,
tests/test_dashboard_history.py holds it under BYTES_PER_SAMPLE), 50 nodes at 1 heartbeat/s
for 30 days and beyond take at most 50 x 17,280 x 64 B = 55.3 MB. SQLite reuses the pages the
pruning frees, so the file stops growing there. tools/bench/dashboard.py measures it again.
Runs in the controller's thread, which owns the registry; the caller commits (feed.py does,
right after a bucket is written).
"""
import math

# (resolution in seconds, seconds kept)
TIERS = ((10, 24 * 3600), (300, 30 * 24 * 3600))
# Older samples are pruned at most this often (a DELETE per tier).
PRUNE_EVERY_S = 60.0
# What one sample costs on disk in the SQLite registry (file size over rows, a registry filled
# with full retention; about 61 B with 10-character node ids), rounded up.
BYTES_PER_SAMPLE = 64
ROWS_PER_NODE = sum(kept // res for res, kept in TIERS)


def disk_bound_bytes(nodes, bytes_per_sample=BYTES_PER_SAMPLE):
    """The most the history of `nodes` nodes takes on disk at steady state."""
    return nodes * ROWS_PER_NODE * bytes_per_sample


def rows_per_node_day():
    """Samples written per node and day (each tier's buckets in a day)."""
    return sum(86400 // res for res, _ in TIERS)


class Bucket:
    """Sums of one node's heartbeats within one bucket."""

    __slots__ = ("start", "n", "cpu", "mem", "mem_n", "batt", "batt_n", "results")

    def __init__(self, start, results):
        self.start = start
        self.n = 0
        self.cpu = 0.0
        self.mem = 0
        self.mem_n = 0
        self.batt = 0.0
        self.batt_n = 0
        self.results = results   # the node's stored-result count when the bucket opened

    def add(self, cpu, mem_free, battery):
        self.n += 1
        self.cpu += cpu
        if mem_free is not None:
            self.mem += mem_free
            self.mem_n += 1
        if battery is not None:
            self.batt += battery
            self.batt_n += 1

    def sample(self, node_id, res, results_now):
        return (node_id, res, self.start, self.cpu / self.n if self.n else None,
                self.mem // self.mem_n if self.mem_n else None,
                self.batt / self.batt_n if self.batt_n else None,
                max(0, results_now - self.results) / float(res))


def battery_of(power):
    """Battery percent from a heartbeat's `power` object, None when it has none."""
    if not isinstance(power, dict):
        return None
    pct = power.get("pct")
    return float(pct) if isinstance(pct, (int, float)) and not isinstance(pct, bool) else None


class HistoryRecorder:
    def __init__(self, registry, tiers=TIERS):
        self.registry = registry
        self.tiers = tiers
        self.open = {}        # (node, res) -> Bucket
        self.pruned_at = 0.0
        self.written = 0

    def heartbeat(self, node_id, now, cpu, mem_free, power, results):
        """One heartbeat of `node_id` at `now`; `results`: the node's stored results so far.
        Buckets this heartbeat closes are written to the registry (committed by the caller)."""
        done = []
        battery = battery_of(power)
        for res, _ in self.tiers:
            start = int(math.floor(now / res) * res)
            bucket = self.open.get((node_id, res))
            if bucket is not None and bucket.start != start:
                if bucket.n:
                    done.append(bucket.sample(node_id, res, results))
                bucket = None
            if bucket is None:
                bucket = self.open[(node_id, res)] = Bucket(start, results)
            bucket.add(cpu, mem_free, battery)
        if done:
            self.registry.put_samples(done)
            self.written += len(done)
        return done

    def prune(self, now):
        """Drop what is past each tier's retention, at most every PRUNE_EVERY_S."""
        if now - self.pruned_at < PRUNE_EVERY_S:
            return 0
        self.pruned_at = now
        return sum(self.registry.prune_samples(res, int(now - kept)) for res, kept in self.tiers)

    def forget(self, node_id):
        for res, _ in self.tiers:
            self.open.pop((node_id, res), None)
