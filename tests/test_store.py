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
