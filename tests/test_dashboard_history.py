"""The dashboard's telemetry history (controller/dashboard/history.py) in the registry:
heartbeats averaged into 10 s and 300 s samples, kept across a restart of the registry's
owner, pruned past each tier's retention, migrated into an older registry, and within the disk
bound the docs state."""
import os
import sqlite3
import time

from edgefleet.controller.dashboard import history
from edgefleet.controller.store import SCHEMA_VERSION, open_registry
from edgefleet.controller.store.sqlite import MIGRATIONS


def test_heartbeats_become_one_sample_per_bucket_and_survive_a_restart(tmp_path):
    path = str(tmp_path / "fleet.db")
    registry = open_registry(path)
    recorder = history.HistoryRecorder(registry)
    start = 1_000_000_000   # a multiple of 300: buckets of both tiers open together
    for i in range(25):     # 25 heartbeats, one a second, 2 results each
        recorder.heartbeat("n-1", start + i, cpu=0.1 if i < 10 else 0.5, mem_free=1000 + i,
                           power={"src": "battery", "pct": 80 - i, "mw": None}, results=2 * i)
    registry.commit()
    registry.close()
    registry = open_registry(path, readonly=True)
    samples = registry.samples("n-1", 10, start)
    registry.close()
    # Two closed 10 s buckets; the third is still open (in memory only).
    assert [s[0] for s in samples] == [start, start + 10]
    first, second = samples
    assert abs(first[1] - 0.1) < 1e-9 and abs(second[1] - 0.5) < 1e-9
    assert first[2] == 1004 and abs(first[3] - 75.5) < 1e-9
    assert abs(first[4] - 2.0) < 1e-9   # 20 results in 10 s


def test_a_node_without_a_battery_has_no_battery_samples(tmp_path):
    registry = open_registry(str(tmp_path / "fleet.db"))
    recorder = history.HistoryRecorder(registry)
    for i in range(12):
        recorder.heartbeat("n-1", 100 + i, cpu=0.2, mem_free=None, power={"src": "mains", "pct": None, "mw": None},
                           results=0)
    (ts, cpu, mem_free, battery, rps), = registry.samples("n-1", 10, 0)
    assert (ts, mem_free, battery, rps) == (100, None, None, 0.0)


def test_samples_past_their_tiers_retention_are_pruned(tmp_path):
    registry = open_registry(str(tmp_path / "fleet.db"))
    now = time.time()
    (fine, fine_kept), (coarse, coarse_kept) = history.TIERS
    registry.put_samples([("n-1", fine, int(now - fine_kept - 10), 0.1, 1, None, 0.0),
                          ("n-1", fine, int(now - 60), 0.1, 1, None, 0.0),
                          ("n-1", coarse, int(now - fine_kept - 600), 0.1, 1, None, 0.0),
                          ("n-1", coarse, int(now - coarse_kept - 600), 0.1, 1, None, 0.0)])
    recorder = history.HistoryRecorder(registry)
    assert recorder.prune(now) == 2
    assert recorder.prune(now + 1) == 0   # not again within PRUNE_EVERY_S
    assert [s[0] for s in registry.samples("n-1", fine, 0)] == [int(now - 60)]
    assert [s[0] for s in registry.samples("n-1", coarse, 0)] == [int(now - fine_kept - 600)]


def test_a_version_3_registry_gains_the_samples_table(tmp_path):
    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path)
    for step in (1, 2, 3):
        MIGRATIONS[step](db)
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    registry = open_registry(path)
    assert registry.schema_version() == SCHEMA_VERSION >= 4
    registry.put_samples([("n-1", 10, 0, 0.5, 10, None, 1.0)])
    assert registry.samples("n-1", 10, 0) == [(0, 0.5, 10, None, 1.0)]


def test_full_retention_stays_within_the_stated_disk_bound(tmp_path):
    path = str(tmp_path / "fleet.db")
    registry = open_registry(path)
    registry.commit()
    empty = os.path.getsize(path)
    now = int(time.time())
    nodes = ["pico-w-%02d" % i for i in range(3)]
    rows = [(node, res, ts, 0.4321, 123456, 87.5, 4.5) for node in nodes for res, kept in history.TIERS
            for ts in range(now - kept, now, res)]
    assert len(rows) == len(nodes) * history.ROWS_PER_NODE == len(nodes) * 17280
    registry.put_samples(rows)
    registry.commit()
    registry.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    registry.close()
    per_sample = (os.path.getsize(path) - empty) / len(rows)
    assert per_sample <= history.BYTES_PER_SAMPLE, per_sample
    assert history.disk_bound_bytes(50) == 50 * 17280 * history.BYTES_PER_SAMPLE
