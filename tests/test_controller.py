"""The controller's logic without a broker: protocol vectors, registry, placement, acks."""
import json
import os

import pytest

from edgefleet.boards import catalog
from edgefleet.boards.errors import ProfileError
from edgefleet.controller.fleet import fleetfile, placement
from edgefleet.controller.errors import ConfigError
from edgefleet.controller.fleet.controller import FleetController
from edgefleet.controller.store import open_registry
from edgefleet.firmware import protocol

VECTORS = os.path.join(os.path.dirname(__file__), "vectors", "messages.json")
MANIFESTS = {"digits_dense": {"mcu_heap_bytes": 48000}, "big": {"mcu_heap_bytes": 10_000_000}}


class Clock:
    def __init__(self):
        self.now = 1_700_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def fleet():
    registry = open_registry(":memory:")
    clock = Clock()
    ctl = FleetController(registry, manifests=MANIFESTS, clock=clock)
    ctl.clock_ = clock
    yield ctl
    registry.close()


def hello(node, board="rpi-pico-w", runtime="micropython", boot=1, models=("digits_dense",)):
    profile = catalog.load(board)
    return json.dumps({"v": 1, "node": node, "board": board, "runtime": runtime, "fw": "0.1.0", "boot": boot,
                       "caps": {"heap": profile["heap_bytes"], "flash": profile["fs_bytes"], "backends": ["engine"],
                                "models": list(models)}})


def heartbeat(node, boot=1, seq=1):
    return json.dumps({"v": 1, "node": node, "boot": boot, "seq": seq, "up": 1000, "cpu": 5.0, "mem_free": 1,
                       "mem_total": 2, "power": {"src": "mains", "pct": None, "mw": None}, "temp": None, "wl": []})


def result(node, seq, boot=1, label=3, truth=3):
    return json.dumps({"v": 1, "node": node, "boot": boot, "seq": seq, "wl": "w", "up": seq * 100, "label": label,
                       "score": 0.9, "us": 1000, "truth": truth})


def test_controller_ingest_accepts_and_rejects_the_protocol_vectors(fleet):
    """The same vectors the firmware checks: a valid node message is accepted, an invalid one rejected."""
    with open(VECTORS) as f:
        vectors = json.load(f)["messages"]
    node_kinds = {"hello", "status", "hb", "result", "event", "reply"}
    checked = 0
    for vec in vectors:
        if vec["kind"] not in node_kinds:
            continue
        payload = vec["payload"]
        node = json.loads(payload).get("node", "mcu-1") if payload.startswith("{") and payload.endswith("}") else "mcu-1"
        node = node if isinstance(node, str) and node.islower() and " " not in node else "mcu-1"
        fleet.handle("ef/node/%s/hello" % node, hello(node))
        before = fleet.rejected
        fleet.handle("ef/node/%s/%s" % (node, vec["kind"]), payload.encode())
        assert fleet.rejected == before + (0 if vec["valid"] else 1), vec
        checked += 1
    assert checked >= 25


def test_operator_request_vectors_through_the_controller(fleet):
    """op_req vectors: a valid request is answered on its reply topic (here with an error: the
    fleet has no such workload), an invalid one is rejected unanswered."""
    with open(VECTORS) as f:
        vectors = [v for v in json.load(f)["messages"] if v["kind"] == "op_req"]
    assert len(vectors) >= 6
    for vec in vectors:
        before = fleet.rejected
        effects = fleet.handle("ef/ctrl/op/req", vec["payload"].encode())
        assert fleet.rejected == before + (0 if vec["valid"] else 1), vec
        replies = [e for e in effects if e.topic.startswith("ef/ctrl/op/reply/")]
        if vec["valid"]:
            assert [e.topic for e in replies] == ["ef/ctrl/op/reply/" + json.loads(vec["payload"])["id"]]
        else:
            assert replies == [], vec


def test_host_only_vectors_decode_on_the_host_and_stay_off_the_boards():
    """The operator kinds' vectors (marked "host") against the host's tables (controller/opwire.py);
    the firmware's own protocol module, which boards load, knows none of those kinds."""
    from edgefleet.controller import opwire
    from edgefleet.firmware.errors import ProtocolError
    with open(VECTORS) as f:
        vectors = json.load(f)
    host = [v for v in vectors["messages"] if v.get("host")]
    assert {v["kind"] for v in host} == set(opwire.SCHEMAS)
    for vec in host:
        if vec["valid"]:
            assert protocol.decode(vec["kind"], vec["payload"].encode())["v"] == 1
        else:
            with pytest.raises(ProtocolError) as e:
                protocol.decode(vec["kind"], vec["payload"])
            assert vec["field"] is None or e.value.field == vec["field"], vec
    for vec in (v for v in vectors["topics"] if v.get("host")):
        if vec.get("error"):
            with pytest.raises(ProtocolError):
                opwire.parse_topic("ef", vec["topic"])
        else:
            assert opwire.parse_topic("ef", vec["topic"]) == (vec["node"], vec["kind"])
    with open(os.path.join(os.path.dirname(__file__), "..", "firmware", "protocol.py")) as f:
        firmware_source = f.read()
    assert not any('"%s":' % kind in firmware_source for kind in opwire.SCHEMAS)


def test_payload_node_must_match_topic(fleet):
    fleet.handle("ef/node/mcu-2/hello", hello("mcu-1"))
    assert fleet.rejected == 1 and fleet.registry.node("mcu-1") is None


def test_hello_registers_and_places_a_workload(fleet):
    fleet.declare([{"id": "w", "model": "digits_dense", "rate": 2, "replicas": 1, "input": {"kind": "samples"}}])
    effects = fleet.handle("ef/node/mcu-1/hello", hello("mcu-1"))
    assert fleet.registry.node("mcu-1")["state"] == "online"
    effects += fleet.tick()
    assigns = [json.loads(e.payload) for e in effects if e.topic == "ef/node/mcu-1/assign"]
    assert assigns and assigns[-1]["wl"][0]["model"] == "digits_dense"
    assert all(e.retain for e in effects if e.topic.endswith("/assign"))
    assert fleet.registry.placements() == [("w", "mcu-1")]


def test_results_are_stored_once_and_acked_contiguously(fleet):
    fleet.handle("ef/node/mcu-1/hello", hello("mcu-1"))
    for seq in (1, 2, 4, 2, 1):
        fleet.handle("ef/node/mcu-1/result", result("mcu-1", seq))
    assert fleet.results_total == 3 and fleet.duplicates == 2
    acks = [json.loads(e.payload) for e in fleet.flush_acks()]
    assert acks == [{"v": 1, "boot": 1, "seq": 2}]
    fleet.handle("ef/node/mcu-1/result", result("mcu-1", 3))
    assert [json.loads(e.payload)["seq"] for e in fleet.flush_acks()] == [4]
    assert fleet.registry.result_counts() == {"mcu-1": 4}


def test_last_will_marks_offline_and_moves_the_workload(fleet):
    fleet.declare([{"id": "w", "model": "digits_dense", "rate": 2, "replicas": 1, "input": {"kind": "samples"}}])
    fleet.handle("ef/node/mcu-1/hello", hello("mcu-1"))
    fleet.handle("ef/node/mcu-2/hello", hello("mcu-2"))
    fleet.tick()
    (placed,) = fleet.registry.placements()
    dead = placed[1]
    other = "mcu-2" if dead == "mcu-1" else "mcu-1"
    effects = fleet.handle("ef/node/%s/status" % dead, json.dumps({"v": 1, "node": dead, "state": "offline", "boot": 1}))
    assert fleet.registry.node(dead)["state"] == "offline"
    # The will alone moves nothing at once: moves start in the next migration cycle (tick).
    assert fleet.registry.placements() == [("w", dead)] and effects == []
    fleet.clock_.now += 31
    fleet.handle("ef/node/%s/hb" % other, heartbeat(other))
    effects = fleet.tick()
    assert fleet.registry.placements() == [("w", other)]
    topics = {e.topic for e in effects}
    assert "ef/node/%s/assign" % other in topics and "ef/node/%s/assign" % dead in topics


def test_a_stale_will_does_not_mark_a_rebooted_node_offline(fleet):
    fleet.handle("ef/node/mcu-1/hello", hello("mcu-1", boot=2))
    fleet.handle("ef/node/mcu-1/status", json.dumps({"v": 1, "node": "mcu-1", "state": "offline", "boot": 1}))
    assert fleet.registry.node("mcu-1")["state"] == "online"


def test_silent_node_times_out(fleet):
    fleet.handle("ef/node/mcu-1/hello", hello("mcu-1"))
    fleet.clock_.now += 30
    fleet.tick()
    assert fleet.registry.node("mcu-1")["state"] == "offline"


def test_assignment_epochs_increase(fleet):
    fleet.handle("ef/node/mcu-1/hello", hello("mcu-1"))
    first = json.loads(fleet.reconciler.assignment("mcu-1").payload)["epoch"]
    second = json.loads(fleet.reconciler.assignment("mcu-1").payload)["epoch"]
    assert second > first


def _node(node_id, board, state="online", cpu=0.0, models=("digits_dense", "big")):
    profile = catalog.load(board)
    return {"id": node_id, "board": board, "runtime": profile["runtime"], "state": state,
            "caps": {"heap": profile["heap_bytes"], "models": list(models)}, "telemetry": {"cpu": cpu}}


def test_placement_spreads_replicas_and_explains_pending():
    profiles = {p["name"]: p for p in catalog.all_profiles()}
    nodes = [_node("a", "rpi-pico-w", cpu=50), _node("b", "rpi-pico-w", cpu=10), _node("c", "rpi4", state="offline")]
    wls = [{"id": "w", "model": "digits_dense", "replicas": 2}, {"id": "huge", "model": "big"},
           {"id": "pi", "model": "digits_dense", "constraints": {"runtime": "cpython"}}]
    placed, pending = placement.plan(wls, nodes, [], profiles, MANIFESTS)
    assert placed == [("w", "a"), ("w", "b")]
    assert "big needs 10000000 bytes of MicroPython heap" in pending["huge"]
    assert "node c is offline" in pending["pi"]
    # Placements are sticky while their node stays capable.
    again, _ = placement.plan(wls[:1], nodes + [_node("d", "rpi-pico-w")], placed, profiles, MANIFESTS)
    assert again == placed


def test_placement_prefers_idle_nodes_deterministically():
    profiles = {p["name"]: p for p in catalog.all_profiles()}
    nodes = [_node("x", "rpi-pico-w", cpu=80), _node("y", "rpi-pico-w", cpu=20), _node("z", "rpi-pico-w", cpu=20)]
    placed, _ = placement.plan([{"id": "w", "model": "digits_dense"}], nodes, [], profiles, MANIFESTS)
    assert placed == [("w", "y")]


def test_fleet_file_parses_and_reports_bad_entries():
    text = '[[workload]]\nid = "d"\nmodel = "digits_dense"\nrate = 5\nreplicas = 2\nconstraints = { runtime = "micropython" }\n'
    (wl,) = fleetfile.parse(text, {"digits_dense"})
    assert wl["replicas"] == 2 and wl["input"] == {"kind": "samples"}
    for bad, words in (('[[workload]]\nid = "d"\nmodel = "nope"\nrate = 1\n', "unknown model"),
                       ('[[workload]]\nid = "d"\nmodel = "digits_dense"\nrate = 0\n', "'rate'"),
                       ('[[workload]]\nid = "D D"\nmodel = "digits_dense"\nrate = 1\n', "'id'"),
                       ('[[workload]]\nid = "d"\nmodel = "digits_dense"\nrate = 1\ncolour = 3\n', "unknown keys"),
                       ("[[workload]\n", "fleet file")):
        with pytest.raises(ConfigError, match=words):
            fleetfile.parse(bad, {"digits_dense"})


def test_fleet_file_topic_inputs():
    head = '[[workload]]\nid = "cam"\nmodel = "digits_dense"\nrate = 20\n'
    (wl,) = fleetfile.parse(head + 'input = { kind = "topic", buffer = 16 }\n', {"digits_dense"})
    assert wl["input"] == {"kind": "topic", "buffer": 16}
    assert fleetfile.parse(fleetfile.dump([wl]), {"digits_dense"}) == [wl]
    for bad, words in (('input = { kind = "telepathy" }\n', "input.kind must be one of .*samples.*topic"),
                       ('input = { kind = "topic", buffer = 0 }\n', "input.buffer must be an integer 1-64"),
                       ('input = { kind = "topic", buffer = 65 }\n', "input.buffer"),
                       # The stream positions are the ledger's, never an operator's.
                       ('input = { kind = "topic", start = 5 }\n', "may not hold start"),
                       ('input = { kind = "samples", buffer = 4 }\n', "may not hold buffer")):
        with pytest.raises(ConfigError, match=words):
            fleetfile.parse(head + bad, {"digits_dense"})


def test_board_profiles_are_complete():
    names = catalog.names()
    for required in ("rpi-pico-w", "esp32", "rpi-zero-2w", "rpi4"):
        assert required in names
    for profile in catalog.all_profiles():
        assert profile["heap_bytes"] <= profile["ram_bytes"]
        if profile["runtime"] == "micropython":
            assert 0 < profile["runtime_heap_budget_bytes"] < profile["heap_bytes"]
    with pytest.raises(ProfileError, match="unknown board"):
        catalog.load("cray-1")


def test_real_models_are_placed_only_where_their_heap_fits():
    from edgefleet import models

    profiles = {p["name"]: p for p in catalog.all_profiles()}
    manifests = models.manifests()
    nodes = [_node("esp", "esp32", models=("digits_dense", "digits_conv")),
             _node("pico", "rpi-pico-w", models=("digits_dense", "digits_conv"))]
    wls = [{"id": "conv", "model": "digits_conv"}, {"id": "dense", "model": "digits_dense"}]
    placed, pending = placement.plan(wls, nodes, [], profiles, manifests)
    esp_room = profiles["esp32"]["heap_bytes"] - profiles["esp32"]["runtime_heap_budget_bytes"]
    pico_room = profiles["rpi-pico-w"]["heap_bytes"] - profiles["rpi-pico-w"]["runtime_heap_budget_bytes"]
    needs = {wl["id"]: manifests[wl["model"]]["mcu_heap_bytes"] for wl in wls}
    for wl in wls:
        if needs[wl["id"]] <= esp_room:
            assert (wl["id"], "esp") in placed or (wl["id"], "pico") in placed
    if max(needs.values()) > esp_room and sum(needs.values()) > pico_room:
        # Heap needs add up on one board: the second model does not fit beside the first.
        assert len(placed) == 1 and "beside its runtime and workloads" in " ".join(pending.values()), (placed, pending)
    wls[0]["constraints"] = {"boards": ["esp32"]}
    _, pending = placement.plan(wls[:1], nodes, [], profiles, manifests)
    if manifests["digits_conv"]["mcu_heap_bytes"] > esp_room:
        assert "digits_conv needs %d bytes" % manifests["digits_conv"]["mcu_heap_bytes"] in pending["conv"]
    unmeasured = {"digits_dense": {}}
    _, pending = placement.plan([{"id": "d", "model": "digits_dense"}], nodes[1:], [], profiles, unmeasured)
    assert "no measured MicroPython heap need" in pending["d"]


def test_a_32_bit_node_is_placed_by_the_figures_measured_at_its_word_size():
    """Heap figures measured on the simulated boards' 64-bit interpreter overstate a 32-bit
    board's (pointers, objects, frames are twice the size): a node whose hello says "word": 32
    gets the profile's and the manifest's "word_32" figures, any other the 64-bit ones."""
    profile = dict(catalog.load("esp32"), runtime_heap_budget_bytes=90000, rom_runtime_heap_budget_bytes=80000,
                   word_32={"runtime_heap_budget_bytes": 60000, "rom_runtime_heap_budget_bytes": 40000})
    manifest = {"mcu_heap_bytes": 50000, "mcu_rom_heap_bytes": 45000,
                "word_32": {"mcu_heap_bytes": 30000, "mcu_rom_heap_bytes": 20000}}
    heap = profile["heap_bytes"]

    def node(word=None, code="romfs"):
        caps = {"heap": heap, "models": ["m"], "code": code}
        if word is not None:
            caps["word"] = word
        return {"id": "esp", "board": "esp32", "runtime": "micropython", "state": "online", "caps": caps}
    for word, code, budget, need in ((32, "romfs", 40000, 20000), (32, "files", 60000, 30000),
                                     (64, "romfs", 80000, 45000), (None, "romfs", 80000, 45000),
                                     (None, "files", 90000, 50000)):
        n = node(word, code)
        assert placement.free_heap_for_models(n, profile) == heap - budget, (word, code)
        assert placement.memory_need({"id": "w", "model": "m"}, n, manifest) == (need, None), (word, code)
    # The records themselves: a 32-bit figure is never above its 64-bit one, which a node that
    # does not say its word size is held to, and each says how it was measured.
    from edgefleet import models
    for real in catalog.all_profiles():
        for key, value in real.get("word_32", {}).items():
            assert key == "measured" or value <= real[key], (real["name"], key)
        assert not real.get("word_32") or "tools/micropython32/build.sh" in real["word_32"]["measured"]
    for name, manifest in models.manifests().items():
        for key, value in manifest.get("word_32", {}).items():
            assert value <= manifest[key], (name, key)
    # A 32-bit figure missing falls back to the 64-bit one, the larger: never too little room.
    bare = dict(profile, word_32={"runtime_heap_budget_bytes": 60000})
    assert placement.free_heap_for_models(node(32), bare) == heap - 60000
    assert placement.memory_need({"id": "w", "model": "m"}, node(32), {"mcu_heap_bytes": 50000}) == (50000, None)
    wide = dict(manifest, mcu_heap_bytes=heap)
    assert placement.fits({"id": "w", "model": "m"}, node(32), profile, wide) is None
    why = placement.fits({"id": "w", "model": "m"}, node(64, "files"), profile, wide)
    assert "needs %d bytes" % heap in why and why.endswith("(figures for the 64-bit MicroPython esp runs)"), why
    why = placement.fits({"id": "w", "model": "m"}, node(None, "files"), profile, wide)
    assert why.endswith("(64-bit figures: esp does not say its word size)"), why


def test_exported_fleet_file_round_trips_any_label():
    """export writes valid TOML whatever a label holds (a newline, quotes, a backslash)."""
    wl = {"id": "w", "model": "digits_dense", "rate": 2.0, "replicas": 2, "input": {"kind": "samples"},
          "constraints": {"runtime": "micropython", "labels": ['line\nbreak', 'quo"te\\']}, "priority": 3}
    (back,) = fleetfile.parse(fleetfile.dump([wl]), {"digits_dense"})
    assert back["constraints"]["labels"] == ['line\nbreak', 'quo"te\\']
    assert (back["id"], back["rate"], back["replicas"], back["priority"]) == ("w", 2.0, 2, 3)
