"""The registry behind its storage interface: schema versions and migrations, refusing what it
cannot read, and the fleet core working from memory."""
import json
import sqlite3

import pytest

from edgefleet.controller import cli
from edgefleet.controller.errors import EXIT_CONFIG, StoreError
from edgefleet.controller.fleet.controller import FleetController
from edgefleet.controller.fleet.state import FleetState
from edgefleet.controller.store import SCHEMA_VERSION, open_registry

from test_controller import MANIFESTS, Clock, hello

# A registry as edgefleet wrote it before schema versions: no version, workloads without `extra`.
UNVERSIONED = """
CREATE TABLE nodes (id TEXT PRIMARY KEY, board TEXT NOT NULL, runtime TEXT NOT NULL, fw TEXT NOT NULL DEFAULT '',
    boot INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'unknown', caps TEXT NOT NULL DEFAULT '{}',
    telemetry TEXT NOT NULL DEFAULT '{}', last_seen REAL NOT NULL DEFAULT 0, epoch INTEGER NOT NULL DEFAULT 0);
CREATE TABLE workloads (id TEXT PRIMARY KEY, model TEXT NOT NULL, rate REAL NOT NULL, input TEXT NOT NULL,
    replicas INTEGER NOT NULL DEFAULT 1, constraints TEXT NOT NULL DEFAULT '{}');
INSERT INTO nodes (id, board, runtime, boot, state) VALUES ('mcu-1', 'rpi-pico-w', 'micropython', 3, 'online');
INSERT INTO workloads (id, model, rate, input) VALUES ('w', 'digits_dense', 2, '{"kind": "samples"}');
"""


def test_an_unversioned_registry_is_migrated_and_keeps_its_rows(tmp_path):
    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path)
    db.executescript(UNVERSIONED)
    db.close()
    registry = open_registry(path)
    assert registry.schema_version() == SCHEMA_VERSION
    assert registry.node("mcu-1")["boot"] == 3
    registry.put_workload({"id": "w", "model": "digits_dense", "rate": 2, "priority": 5})
    (wl,) = registry.workloads()
    assert wl["priority"] == 5
    assert registry.events() == []
    registry.close()


def test_a_newer_registry_and_a_file_that_is_no_registry_are_refused(tmp_path, capsys):
    newer = str(tmp_path / "newer.db")
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version=%d" % (SCHEMA_VERSION + 1))
    db.close()
    with pytest.raises(StoreError, match="schema version %d" % (SCHEMA_VERSION + 1)):
        open_registry(newer)
    junk = tmp_path / "notadb"
    junk.write_bytes(b"this is not a database, just text " * 100)
    assert cli.main(["status", "--db", str(junk)]) == EXIT_CONFIG
    assert "is not an edgefleet registry" in capsys.readouterr().err


def test_status_reads_without_writing(tmp_path, capsys):
    path = str(tmp_path / "fleet.db")
    registry = open_registry(path)
    ctl = FleetController(registry, manifests=MANIFESTS, clock=Clock())
    ctl.handle("ef/node/mcu-1/hello", hello("mcu-1"))
    registry.close()
    before = open(path, "rb").read()
    assert cli.main(["status", "--db", path, "--json"]) == 0
    snap = json.loads(capsys.readouterr().out)
    assert [n["id"] for n in snap["nodes"]] == ["mcu-1"]
    assert open(path, "rb").read() == before


def test_a_v2_registry_gains_the_slot_and_status_shows_version_and_slot(tmp_path, capsys):
    path = str(tmp_path / "v2.db")
    registry = open_registry(path)
    FleetController(registry, manifests=MANIFESTS, clock=Clock()).handle("ef/node/old-1/hello", hello("old-1"))
    registry.close()
    db = sqlite3.connect(path)   # back to version 2: the nodes table without its slot column
    db.execute("ALTER TABLE nodes DROP COLUMN slot")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    registry = open_registry(path)
    assert registry.schema_version() == SCHEMA_VERSION and registry.node("old-1")["slot"] is None
    ctl = FleetController(registry, manifests=MANIFESTS, clock=Clock())
    slotted = json.loads(hello("new-1"))
    slotted.update(fw="9.9", slot="slot_b")
    ctl.handle("ef/node/new-1/hello", json.dumps(slotted))
    registry.close()
    assert cli.main(["status", "--db", path, "--json"]) == 0
    nodes = {n["id"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}
    assert (nodes["new-1"]["fw"], nodes["new-1"]["slot"]) == ("9.9", "slot_b")
    assert (nodes["old-1"]["fw"], nodes["old-1"]["slot"]) == ("0.1.0", None)   # a hello without slot
    assert cli.main(["status", "--db", path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["NODE", "BOARD", "RUNTIME", "VERSION", "SLOT"]
    assert lines[1].split()[:5] == ["new-1", "rpi-pico-w", "micropython", "9.9", "slot_b"]
    assert lines[2].split()[:5] == ["old-1", "rpi-pico-w", "micropython", "0.1.0", "-"]


def test_the_tick_decides_from_memory(tmp_path):
    """Placement and migration read the in-memory FleetState: a tick reads no node, workload or
    placement table (the registry is written behind it)."""
    registry = open_registry(str(tmp_path / "fleet.db"))
    clock = Clock()
    ctl = FleetController(registry, manifests=MANIFESTS, clock=clock)
    ctl.declare([{"id": "w", "model": "digits_dense", "rate": 1, "replicas": 2}])
    for node in ("a", "b", "c"):
        ctl.handle("ef/node/%s/hello" % node, hello(node))
    ctl.tick()
    reads = []
    registry.db.set_trace_callback(lambda sql: reads.append(sql) if sql.lstrip().upper().startswith("SELECT") else None)
    for _ in range(3):
        clock.now += 1
        ctl.tick()
    registry.db.set_trace_callback(None)
    assert not [sql for sql in reads if any(t in sql for t in ("FROM nodes", "FROM workloads", "FROM placements"))], reads
    # ...and what it decided is in the registry for everyone else.
    assert FleetState.load(registry).placements() == ctl.state.placements()
    assert len(ctl.state.placements()) == 2
    registry.close()


# -- the storage interface, on every backend ------------------------------------------------------

def _force_version(location, version):
    """Write `version` into a registry's schema version behind the backend's back."""
    if location.startswith("postgresql://"):
        import psycopg
        with psycopg.connect(location, autocommit=True) as db:
            db.execute("UPDATE edgefleet_schema SET version=%s", (version,))
    else:
        db = sqlite3.connect(location)
        db.execute("PRAGMA user_version=%d" % version)
        db.close()


def test_every_backend_creates_the_current_schema_and_refuses_a_newer_one(registry_location):
    registry = open_registry(registry_location)
    assert registry.schema_version() == SCHEMA_VERSION
    registry.close()
    registry = open_registry(registry_location)    # opening again migrates nothing
    assert registry.schema_version() == SCHEMA_VERSION
    registry.close()
    _force_version(registry_location, SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="schema version %d" % (SCHEMA_VERSION + 1)):
        open_registry(registry_location)


def test_every_backend_keeps_nodes_workloads_and_placements(registry_location):
    registry = open_registry(registry_location)
    registry.upsert_node("b-1", "rpi-pico-w", "micropython", "0.1.0", 2, {"heap": 200000}, now=100.5, slot="slot_a")
    registry.upsert_node("a-1", "pi4", "linux", "0.1.0", 1, {}, now=101.25)
    registry.record_heartbeat("b-1", {"cpu": 5.5, "outbox": {"n": 3}}, now=102.75)
    registry.set_epoch("b-1", 7)
    assert registry.set_node_state("a-1", "offline") and not registry.set_node_state("nobody", "offline")
    registry.put_workload({"id": "w", "model": "digits_dense", "rate": 2.5, "replicas": 2, "priority": 5,
                           "constraints": {"runtime": "micropython"}, "resources": {"heap": 1000}})
    registry.place("w", "b-1", now=103.0)
    registry.place("w", "b-1", now=104.0)    # placed once
    registry.place("w", "a-1")
    registry.commit()
    registry.close()
    registry = open_registry(registry_location, readonly=True)
    nodes = {n["id"]: n for n in registry.nodes()}
    assert sorted(nodes) == ["a-1", "b-1"]
    b = registry.node("b-1")
    assert (b["boot"], b["slot"], b["epoch"], b["caps"], b["last_seen"]) == (2, "slot_a", 7, {"heap": 200000}, 102.75)
    assert b["telemetry"] == {"cpu": 5.5, "outbox": {"n": 3}}
    assert nodes["a-1"]["state"] == "offline" and registry.node("nobody") is None
    (wl,) = registry.workloads()
    assert (wl["rate"], wl["replicas"], wl["priority"], wl["resources"], wl["constraints"], wl["input"]) == (
        2.5, 2, 5, {"heap": 1000}, {"runtime": "micropython"}, {"kind": "samples"})
    assert registry.placements() == [("w", "a-1"), ("w", "b-1")]
    registry.close()
    registry = open_registry(registry_location)
    registry.unplace("w", "a-1")
    registry.remove_workload("w")
    registry.commit()
    assert registry.workloads() == [] and registry.placements() == []
    registry.close()


def _result(node, seq, boot=1, wl="w", label=3, truth=3, us=1000):
    return {"node": node, "boot": boot, "seq": seq, "wl": wl, "label": label, "truth": truth, "score": 0.5,
            "us": us, "up": seq * 10}


def test_every_backend_stores_a_result_once_and_counts_what_is_contiguous(registry_location):
    registry = open_registry(registry_location)
    assert registry.store_result(_result("n", 1)) and not registry.store_result(_result("n", 1, label=9))
    for seq in (2, 3, 5):
        assert registry.store_result(_result("n", seq, truth=None if seq == 5 else 3))
    assert registry.store_result(_result("n", 1, boot=2, wl="v", label=1, us=2 ** 40))
    registry.rollback()   # nothing committed: nothing stored
    assert registry.result_counts() == {} and registry.contiguous_results("n", 1) == 0
    for seq in (1, 2, 3, 5):
        registry.store_result(_result("n", seq, truth=None if seq == 5 else 3))
    registry.store_result(_result("n", 1, boot=2, wl="v", label=1, us=2 ** 40))
    registry.commit()
    assert registry.contiguous_results("n", 1) == 3 and registry.contiguous_results("n", 2) == 1
    assert registry.contiguous_results("n", 3) == 0
    assert registry.stored_result("n", 1, 2) == {"wl": "w", "label": 3, "truth": 3, "score": 0.5, "us": 1000, "up": 20}
    assert registry.stored_result("n", 1, 4) is None
    assert registry.result_counts() == {"n": 5}
    assert registry.result_totals() == {"w": {"results": 4, "correct": 3, "with_truth": 3, "sum_us": 4000},
                                        "v": {"results": 1, "correct": 0, "with_truth": 1, "sum_us": 2 ** 40}}
    registry.close()


def test_every_backend_keeps_the_dashboards_history_and_recent_results(registry_location):
    registry = open_registry(registry_location)
    registry.put_samples([("n", 10, 100, 0.5, 4096, None, 1.5), ("n", 10, 110, 0.25, 2048, 80.0, 2.0),
                          ("n", 300, 0, 0.4, 3000, None, 1.0), ("m", 10, 100, 0.9, 1, None, 0.0)])
    registry.put_samples([("n", 10, 110, 0.75, 1024, 79.5, 3.0)])   # a bucket written again is replaced
    registry.commit()
    assert registry.samples("n", 10, 0) == [(100, 0.5, 4096, None, 1.5), (110, 0.75, 1024, 79.5, 3.0)]
    assert registry.samples("n", 10, 105) == [(110, 0.75, 1024, 79.5, 3.0)]
    assert registry.prune_samples(10, 105) == 2 and registry.samples("n", 300, 0) == [(0, 0.4, 3000, None, 1.0)]
    for seq, truth in ((1, 3), (2, 4), (3, None)):
        registry.store_result(_result("n", seq, truth=truth), now=1000.0 + seq)
    registry.commit()
    recent = registry.recent_results("w", 1001.5)
    assert [(r[0], r[3]) for r in recent] == [(1002.0, False), (1003.0, None)]
    assert recent[0][1:3] == (0.5, 1000)
    assert [r[0] for r in registry.recent_results("w", 0, limit=2)] == [1002.0, 1003.0]
    registry.close()


def test_every_backend_keeps_the_audit_log_ledger_and_reconciler_state(registry_location):
    registry = open_registry(registry_location)
    for i in range(5):
        registry.add_event("n%d" % (i % 2), "info", "k%d" % (i % 3), "message %d" % i, {"i": i} if i else None,
                           now=1000.0 + i)
    assert [e["msg"] for e in registry.events(limit=3)] == ["message 2", "message 3", "message 4"]
    assert [e["msg"] for e in registry.events(node_id="n1")] == ["message 1", "message 3"]
    assert [e["data"] for e in registry.events(kinds=["k0", "k1"])] == [None, {"i": 1}, {"i": 3}, {"i": 4}]
    registry.open_stretch("w", 0, "a", 0)
    registry.close_stretch("w", 0, "a", 10)
    registry.open_stretch("w", 0, "b", 10)
    registry.open_stretch("w", 1, "c", 0)
    assert registry.open_stretches() == [("w", 0, "b", 10), ("w", 1, "c", 0)]
    assert registry.open_stretches("x") == [] and registry.tracks("w") and not registry.tracks("x")
    assert registry.newest_stretch("w", "a") == (0, 0, 10) and registry.open_lane("w", "b") == 0
    assert registry.owner_lane("w", "a", 9) == 0 and registry.owner_lane("w", "a", 10) is None
    assert registry.accept_position("w", 0, 4, "a", 1, 5) and not registry.accept_position("w", 0, 4, "b", 1, 1)
    assert registry.accepted_by("w", 0, 4) == "a" and registry.lane_marks("w", 0) == (4, 10)
    registry.drop_stretch("w", 0, "b", 10)
    registry.reopen_stretch("w", 0, "a", 0)
    assert registry.open_lane("w", "a") == 0
    registry.set_resume("a", "w", 12)
    registry.set_resume("a", "w", 14)
    registry.set_resume("b", "w", 3)
    registry.set_resume("b", "w", None)
    registry.put_move({"workload": "w", "lane": 0, "state": "starting", "to": "b"})
    registry.put_move({"workload": "w", "lane": 0, "state": "draining", "to": "b"})
    registry.set_draining("a", True)
    registry.set_draining("a", True)
    registry.set_draining("c", True)
    registry.set_draining("c", False)
    registry.commit()
    registry.close()
    registry = open_registry(registry_location)
    assert registry.resume_positions() == {("a", "w"): 14}
    assert registry.moves() == [{"workload": "w", "lane": 0, "state": "draining", "to": "b"}]
    assert registry.draining() == {"a"}
    registry.remove_move("w", 0)
    registry.forget_streams("w")
    registry.commit()
    assert registry.moves() == [] and registry.open_stretches() == []
    registry.close()


def test_the_controller_runs_on_every_backend(registry_location):
    """The fleet core through the interface: a node registers, is placed, its results are stored
    once and acknowledged; a controller restarted on the same registry continues from it."""
    registry = open_registry(registry_location)
    clock = Clock()
    ctl = FleetController(registry, manifests=MANIFESTS, clock=clock)
    ctl.declare([{"id": "w", "model": "digits_dense", "rate": 1}])
    ctl.handle("ef/node/mcu-1/hello", hello("mcu-1"))
    ctl.tick()
    assert ctl.state.placements() == [("w", "mcu-1")]
    for seq in (1, 2, 2, 3):
        ctl.handle("ef/node/mcu-1/result", json.dumps(_result("mcu-1", seq) | {"v": 1}))
    acks = [json.loads(e.payload) for e in ctl.flush_acks()]
    assert acks == [{"v": 1, "boot": 1, "seq": 3}] and ctl.duplicates == 1
    registry.close()
    registry = open_registry(registry_location)
    ctl = FleetController(registry, manifests=MANIFESTS, clock=clock)
    assert ctl.state.placements() == [("w", "mcu-1")]
    ctl.handle("ef/node/mcu-1/result", json.dumps(_result("mcu-1", 4) | {"v": 1}))
    assert [json.loads(e.payload)["seq"] for e in ctl.flush_acks()] == [4]
    assert registry.result_counts() == {"mcu-1": 4}
    registry.close()


def test_a_bad_or_unreachable_postgresql_url_is_one_clear_line(tmp_path, capsys):
    from edgefleet.controller.netutil import free_port
    unreachable = "postgresql://ef:secret@127.0.0.1:%d/fleet" % free_port()
    with pytest.raises(StoreError, match="cannot reach the PostgreSQL registry") as caught:
        open_registry(unreachable)
    assert "secret" not in str(caught.value)
    assert cli.main(["status", "--db", unreachable]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("edgefleet: cannot reach the PostgreSQL registry at postgresql://ef:***@127.0.0.1")
    assert len(err.strip().splitlines()) == 1 and "secret" not in err
    assert cli.main(["status", "--db", "postgresql://ef@127.0.0.1:notaport/fleet"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("edgefleet: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_writer_that_stands_still_mid_transaction_frees_its_rows_and_comes_back(postgres_url):
    """A replica frozen inside a transaction (SIGSTOP, a paused VM) holds the node rows it
    locked: PostgreSQL ends its session after the idle-in-transaction limit, the other replica's
    writes then go ahead, and the frozen one, running again, is told once and reconnects."""
    import time
    from edgefleet.controller.store.postgres import PostgresRegistry
    frozen = PostgresRegistry(postgres_url, idle_in_transaction_s=1.0)   # a replica's: LOOP_STALL_S
    other = PostgresRegistry(postgres_url)
    try:
        frozen.upsert_node("n1", "esp32", "micropython", "0.1.0", 1, {"heap": 1})
        frozen.commit()
        frozen.lock_nodes(["n1"])          # and then nothing: its process stands still
        started = time.monotonic()
        with pytest.raises(Exception) as held:
            other.lock_nodes(["n1"], wait_s=0.2)   # held now
        assert other.busy(held.value)
        other.rollback()
        other.lock_nodes(["n1"], wait_s=5.0)       # free once the server ended the frozen session
        waited = time.monotonic() - started
        other.set_node_state("n1", "offline")
        other.commit()
        assert 0.8 < waited < 4.0, waited
        # Running again, the frozen writer's next statement finds its session gone: that one
        # fails, as its transaction is lost; the registry reconnects and goes on.
        with pytest.raises(Exception):
            frozen.set_node_state("n1", "online")
            frozen.commit()
        frozen.rollback()
        assert frozen.node("n1")["state"] == "offline"
        frozen.set_node_state("n1", "online")
        frozen.commit()
        assert other.node("n1")["state"] == "online" and frozen.reconnects == 1
    finally:
        frozen.close()
        other.close()
