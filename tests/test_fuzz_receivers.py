"""No input kills a receiver (issue 15, the controller side).

Three parts: the attack corpus replayed as regression tests (each payload once broke the
controller), property-based fuzzing with Hypothesis of FleetController.handle/tick, the failure
detector and the MQTT packet parsing in firmware/mqtt_codec.py, and the corpus through a real
broker into a running ControllerService. Budgets are small (max_examples) so that the file runs in
well under a minute on a 2-core machine.
"""
import asyncio
import json
import math
import threading

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.controller.cli import main as cli_main
from edgefleet.controller.errors import EXIT_OPERATION, ControllerFailed
from edgefleet.controller.fleet import detector
from edgefleet.controller.fleet.controller import BAD_MESSAGE_BURST, FleetController
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.store import open_registry
from edgefleet.firmware import mqtt_codec, protocol
from edgefleet.firmware.errors import ProtocolError, ProtocolViolation
from support.waiting import wait_until
from test_controller import MANIFESTS, Clock, heartbeat, hello, result

VICTIM = "victim"
HB_TOPIC = "ef/node/%s/hb" % VICTIM


def _hb(**changes):
    msg = json.loads(heartbeat(VICTIM))
    msg.update(changes)
    return json.dumps(msg)


def _hello_with(caps):
    msg = json.loads(hello(VICTIM))
    msg["caps"] = caps
    return json.dumps(msg)


# The attacks of issue 15, one message each: (name, topic, payload). Before the fix each one
# escaped FleetController.handle and killed the controller's thread.
CORPUS = [
    ("nested_arrays", HB_TOPIC, ("[" * 1024 + "]" * 1024).encode()),
    ("nested_objects", HB_TOPIC, ('{"a":' * 400 + "1" + "}" * 400).encode()),
    ("int_over_int64", HB_TOPIC, _hb(seq=2 ** 63).encode()),
    ("int_under_int64", HB_TOPIC, _hb(up=-2 ** 63 - 1).encode()),
    ("caps_heap_str", "ef/node/%s/hello" % VICTIM, _hello_with({"heap": "lots", "models": ["digits_dense"]}).encode()),
    ("caps_models_int", "ef/node/%s/hello" % VICTIM, _hello_with({"heap": 1000, "models": 7}).encode()),
    ("nan_cpu", HB_TOPIC, _hb(cpu=float("nan")).encode()),
    ("inf_temp", HB_TOPIC, _hb(temp=float("inf")).encode()),
    ("huge_float", HB_TOPIC, _hb(cpu=1.0).replace('"cpu": 1.0', '"cpu": 1e999').encode()),
    ("not_utf8", HB_TOPIC, b"\xff\xfe{"),
]


def new_fleet(clock=None):
    clock = clock or Clock()
    ctl = FleetController(open_registry(":memory:"), manifests=MANIFESTS, clock=clock)
    ctl.clock_ = clock
    return ctl


def _registered(ctl):
    ctl.handle("ef/node/%s/hello" % VICTIM, hello(VICTIM))
    ctl.handle(HB_TOPIC, heartbeat(VICTIM))


def _registry_image(ctl):
    reg = ctl.registry
    return (json.dumps(reg.nodes(), sort_keys=True, default=str), reg.placements(), reg.result_counts())


def _acks(effects):
    return [json.loads(e.payload) for e in effects if e.topic.endswith("/ack")]


# -- the corpus, one message at a time --------------------------------------------------------

@pytest.mark.parametrize("name,topic,payload", CORPUS, ids=[c[0] for c in CORPUS])
def test_attack_is_rejected_and_changes_nothing(name, topic, payload):
    ctl = new_fleet()
    _registered(ctl)
    before = _registry_image(ctl)
    rejected = ctl.rejected
    assert ctl.handle(topic, payload) == []
    assert ctl.rejected == rejected + 1
    assert _registry_image(ctl) == before
    assert [e for e in ctl.registry.events(kinds=["bad_message"])], "no bad_message event"
    assert any(e.topic == "ef/ctrl/lease" for e in ctl.tick())


def test_a_handler_failure_is_rolled_back_and_rejected(monkeypatch):
    """A bug past validation costs that one message, whatever it wrote before failing."""
    ctl = new_fleet()
    _registered(ctl)
    before = _registry_image(ctl)

    def broken(*args):
        raise RuntimeError("a bug in placement")
    monkeypatch.setattr(ctl.reconciler, "reconcile", broken)
    ctl.clock_.now += 1
    assert ctl.handle("ef/node/%s/hello" % VICTIM, hello(VICTIM, boot=2)) == []
    assert _registry_image(ctl) == before
    assert ctl.state.node(VICTIM)["boot"] == 1
    assert ctl.rejected == 1


def test_bad_message_events_are_rate_limited():
    """A flood of garbage writes a bounded number of events, and says how many it left out."""
    ctl = new_fleet()
    for _ in range(500):
        ctl.handle(HB_TOPIC, b"not json")
    events = ctl.registry.events(kinds=["bad_message"], limit=1000)
    assert ctl.rejected == 500 and len(events) == BAD_MESSAGE_BURST
    ctl.clock_.now += 60
    ctl.handle(HB_TOPIC, b"not json")
    latest = ctl.registry.events(kinds=["bad_message"], limit=1)[-1]
    assert "480 more not logged" in latest["msg"]


# -- the failure detector --------------------------------------------------------------------

def test_detector_survives_a_wall_clock_step_back():
    clock = Clock()
    mono = Clock()
    ctl = FleetController(open_registry(":memory:"), manifests=MANIFESTS, clock=clock, monotonic=mono)
    for _ in range(20):
        ctl.handle("ef/node/n1/hb" if _ else "ef/node/n1/hello", heartbeat("n1") if _ else hello("n1"))
        ctl.tick()
        clock.now += 1.0
        mono.now += 1.0
    clock.now -= 5.0   # NTP or an operator steps the wall clock back
    effects = ctl.tick()
    assert any(e.topic == "ef/ctrl/lease" for e in effects)
    assert ctl.state.node("n1")["state"] == "online"
    # Silence is measured on the monotonic clock: the node still fails on time.
    mono.now += 15.0
    clock.now += 15.0
    ctl.tick()
    assert ctl.state.node("n1")["state"] == "offline"


def test_detector_survives_steady_slow_heartbeats():
    """Heartbeats ~4.3 s apart, then a tick right after one: phi's exponent once overflowed."""
    ctl = new_fleet()
    ctl.handle("ef/node/n1/hello", hello("n1"))
    for _ in range(30):
        ctl.clock_.now += 4.3
        ctl.handle("ef/node/n1/hb", heartbeat("n1"))
        ctl.tick()
    assert ctl.state.node("n1")["state"] == "online"


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=True), st.floats(allow_nan=True),
       st.floats(min_value=1e-6, max_value=1e6, allow_nan=False))
def test_phi_is_always_within_its_clamp(elapsed, mean, std):
    value = detector.phi(elapsed, mean, std)
    assert 0.0 <= value <= detector.PHI_MAX or math.isnan(elapsed) or math.isnan(mean)


# -- acknowledgements ------------------------------------------------------------------------

def test_a_heartbeat_cannot_move_the_ack_watermark():
    """outbox.oldest is the node's say-so: the controller acks only what its registry holds."""
    ctl = new_fleet()
    _registered(ctl)
    for seq in (1, 2, 3):
        ctl.handle("ef/node/%s/result" % VICTIM, result(VICTIM, seq))
    assert [a["seq"] for a in _acks(ctl.tick())] == [3]
    ctl.handle(HB_TOPIC, _hb(outbox={"oldest": [1, 1_000_000], "last": [1, 1_000_000]}))
    ctl.handle(HB_TOPIC, _hb(outbox={"oldest": [1, 2 ** 62]}))
    for effects in (ctl.tick(), ctl.tick()):
        assert all(a["seq"] <= 3 for a in _acks(effects)), _acks(effects)


def test_acks_step_over_what_a_full_outbox_dropped_once_the_next_result_is_stored():
    """What the heartbeat's `oldest` was for: a node whose flash dropped results 4..9 must see
    acks move on, but only up to results the registry holds."""
    ctl = new_fleet()
    _registered(ctl)
    for seq in (1, 2, 3):
        ctl.handle("ef/node/%s/result" % VICTIM, result(VICTIM, seq))
    ctl.tick()
    ctl.handle(HB_TOPIC, _hb(outbox={"oldest": [1, 10], "last": [1, 12]}))
    assert _acks(ctl.tick()) == []
    for seq in (10, 11, 12):
        ctl.handle("ef/node/%s/result" % VICTIM, result(VICTIM, seq))
    assert [a["seq"] for a in _acks(ctl.tick())] == [12]


def test_a_conflicting_duplicate_is_logged_and_not_acked():
    ctl = new_fleet()
    _registered(ctl)
    ctl.handle("ef/node/%s/result" % VICTIM, result(VICTIM, 1))
    assert [a["seq"] for a in _acks(ctl.tick())] == [1]
    ctl.handle("ef/node/%s/result" % VICTIM, result(VICTIM, 2, label=3))
    ctl.handle("ef/node/%s/result" % VICTIM, result(VICTIM, 2, label=7))   # same (node, boot, seq)
    assert [a["seq"] for a in _acks(ctl.tick())] == [2]
    ctl.handle("ef/node/%s/result" % VICTIM, result(VICTIM, 3, label=3))
    # Seq 3 arrives twice, the second time with other content before the first is acked: the
    # conflicting copy adds nothing, the stored one is acked.
    ctl.handle("ef/node/%s/result" % VICTIM, result(VICTIM, 3, label=5))
    assert [a["seq"] for a in _acks(ctl.tick())] == [3]
    assert ctl.conflicts == 2
    events = ctl.registry.events(kinds=["result_conflict"])
    assert len(events) == 1 and events[0]["node"] == VICTIM   # once per (node, boot)
    # The stored result stays the first one.
    assert ctl.registry.stored_result(VICTIM, 1, 2)["label"] == 3


def test_a_conflict_alone_is_never_acked(tmp_path):
    """After a restart, a result whose (node, boot, seq) the registry holds with other content:
    acknowledging it would tell the node to drop a result the registry does not have."""
    db = str(tmp_path / "fleet.db")
    first = FleetController(open_registry(db), manifests=MANIFESTS, clock=Clock())
    _registered(first)
    first.handle("ef/node/%s/result" % VICTIM, result(VICTIM, 1, label=3))
    first.registry.close()
    ctl = FleetController(open_registry(db), manifests=MANIFESTS, clock=Clock())
    ctl.handle("ef/node/%s/result" % VICTIM, result(VICTIM, 1, label=9))
    assert _acks(ctl.tick()) == []
    assert ctl.conflicts == 1 and ctl.registry.stored_result(VICTIM, 1, 1)["label"] == 3
    # The node's next result, with the same content again for seq 1, moves acks on as ever.
    ctl.handle("ef/node/%s/result" % VICTIM, result(VICTIM, 2))
    assert [a["seq"] for a in _acks(ctl.tick())] == [2]
    ctl.registry.close()


# -- property-based fuzzing ------------------------------------------------------------------

NODES = st.sampled_from(["victim", "n1", "mcu-1", "Bad Id", "", "a" * 40, "+", "#"])
KINDS = st.sampled_from(list(protocol.NODE_TOPIC_KINDS) + ["lease", "nope"])
TOPICS = st.one_of(
    st.builds(lambda n, k: "ef/node/%s/%s" % (n, k), NODES, KINDS),
    st.sampled_from(["ef/ctrl/lease", "ef/ctrl/status", "ef/node", "", "ef/node/a/b/c"]),
    st.text(max_size=40),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
VALID = {"hello": json.loads(hello(VICTIM)), "hb": json.loads(heartbeat(VICTIM)), "result": json.loads(result(VICTIM, 1)),
         "status": {"v": 1, "node": VICTIM, "state": "offline", "boot": 1},
         "event": {"v": 1, "node": VICTIM, "boot": 1, "up": 5, "level": "warn", "kind": "degraded", "msg": "x"},
         "reply": {"v": 1, "id": "c-1", "ok": True, "data": {}},
         "ota_state": {"v": 1, "node": VICTIM, "boot": 1, "id": "u", "state": "confirmed", "off": 0}}


@st.composite
def mutated(draw):
    """A valid message of some kind with one field replaced by anything: what gets past the
    JSON parser and tests the schema and the handlers."""
    kind = draw(st.sampled_from(sorted(VALID)))
    msg = json.loads(json.dumps(VALID[kind]))
    field = draw(st.sampled_from(sorted(msg) + ["caps.heap", "caps.models", "power.src", "outbox"]))
    value = draw(JSON_VALUES)
    head, _, tail = field.partition(".")
    if tail and isinstance(msg.get(head), dict):
        msg[head][tail] = value
    else:
        msg[field] = value
    return "ef/node/%s/%s" % (VICTIM, kind), json.dumps(msg).encode()


MESSAGES = st.one_of(
    st.tuples(TOPICS, st.binary(max_size=600)),
    st.tuples(TOPICS, JSON_VALUES.map(lambda v: json.dumps(v).encode())),
    mutated(),
)


def _check_invariants(ctl):
    for node in ctl.registry.nodes():
        assert protocol.valid_node_id(node["id"])
        assert isinstance(node["caps"], dict)
        assert isinstance(node["boot"], int) and -2 ** 63 <= node["boot"] < 2 ** 63
    effects = ctl.tick()
    assert any(e.topic == "ef/ctrl/lease" for e in effects), "tick produced no lease"
    for effect in effects:
        if effect.topic.endswith("/ack"):
            ack = json.loads(effect.payload)
            node = effect.topic.split("/")[2]
            assert ack["seq"] <= ctl.registry.contiguous_results(node, ack["boot"]) or \
                ctl.registry.stored_result(node, ack["boot"], ack["seq"]) is not None, ack


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MESSAGES, min_size=1, max_size=8), st.floats(min_value=-30, max_value=30))
def test_handle_and_tick_survive_any_message_sequence(messages, clock_step):
    ctl = new_fleet()
    _registered(ctl)
    for topic, payload in messages:
        effects = ctl.handle(topic, payload)
        assert isinstance(effects, list)
        ctl.clock_.now += clock_step   # wall clock jumps either way between messages
    _check_invariants(ctl)
    ctl.registry.close()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(protocol.kinds())), st.one_of(st.binary(max_size=5000), st.text(max_size=600)))
def test_decode_raises_only_protocol_error(kind, payload):
    try:
        msg = protocol.decode(kind, payload)
    except ProtocolError:
        return
    assert isinstance(msg, dict) and msg["v"] == protocol.VERSION


# -- MQTT packet parsing (firmware/mqtt_codec.py) --------------------------------------------

def _read_header(data):
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await mqtt_codec.read_fixed_header(reader), reader
    return asyncio.run(go())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=8))
def test_fixed_header_parsing_accepts_or_refuses_any_bytes(data):
    try:
        (first, length), _ = _read_header(data)
    except (ProtocolViolation, EOFError):
        return
    assert 0 <= first <= 255 and 0 <= length <= mqtt_codec.MAX_REMAINING_LENGTH


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=mqtt_codec.MAX_REMAINING_LENGTH), st.integers(min_value=0, max_value=255))
def test_remaining_length_round_trips(n, first):
    (got_first, got), _ = _read_header(bytes((first,)) + mqtt_codec.encode_length(n))
    assert (got_first, got) == (first, n)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=6))
def test_connack_parsing_accepts_or_refuses_any_body(body):
    try:
        present, code = mqtt_codec.parse_connack(body)
    except ProtocolViolation:
        return
    assert isinstance(present, bool) and 0 <= code <= 255


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=700), st.integers(min_value=0, max_value=700))
def test_skip_bytes_consumes_exactly_or_hits_eof(data, n):
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        await mqtt_codec.skip_bytes(reader, n)
        return await reader.read()
    try:
        rest = asyncio.run(go())
    except EOFError:
        assert n > len(data)
        return
    assert rest == data[n:]


# -- through a real broker -------------------------------------------------------------------

class LeaseWatch:
    def __init__(self, broker):
        self.leases = 0
        self.status = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fuzz-watch")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe([("ef/ctrl/lease", 0), ("ef/ctrl/status", 1)])
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        if message.topic == "ef/ctrl/lease":
            self.leases += 1
        else:
            self.status.append(json.loads(message.payload)["state"])

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def test_corpus_through_a_broker_leaves_the_controller_leasing(mosquitto, tmp_path):
    service = ControllerService(mosquitto.host, mosquitto.port, db_path=str(tmp_path / "fleet.db"), ctrl_id="ctrl-fuzz",
                                tick_s=0.2).start()
    watch = LeaseWatch(mosquitto)
    sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fuzz-attacker")
    sender.connect(mosquitto.host, mosquitto.port)
    sender.loop_start()
    try:
        sender.publish("ef/node/%s/hello" % VICTIM, hello(VICTIM), qos=1).wait_for_publish(5)
        for _ in range(3):
            for name, topic, payload in CORPUS:
                sender.publish(topic, payload, qos=1).wait_for_publish(5)
        wait_until(lambda: service.fleet is not None and service.fleet.rejected >= 3 * len(CORPUS), 10,
                   "the corpus rejected")
        seen = watch.leases
        wait_until(lambda: watch.leases >= seen + 5, 10, "leases after the corpus")
        assert service.alive() and service.failure is None
    finally:
        sender.loop_stop()
        sender.disconnect()
        watch.close()
        service.stop()


class TickBomb(FleetController):
    """A controller whose loop dies: what must not leave a silent, connected process behind."""

    def tick(self, connected_since=None):
        if self.lease_seq >= 2:
            raise RuntimeError("a bug in tick")
        return super().tick(connected_since)


def test_a_dead_loop_says_offline_and_stop_raises(mosquitto, tmp_path):
    watch = LeaseWatch(mosquitto)
    service = ControllerService(mosquitto.host, mosquitto.port, db_path=str(tmp_path / "fleet.db"), ctrl_id="ctrl-bomb",
                                tick_s=0.1, fleet_class=TickBomb).start()
    try:
        wait_until(lambda: not service.alive(), 10, "the loop to die")
        wait_until(lambda: watch.status[-1:] == ["offline"], 5, "ctrl_status offline")
        assert isinstance(service.failure, RuntimeError)
        with pytest.raises(ControllerFailed):
            service.stop()
    finally:
        watch.close()


def test_the_controller_process_exits_nonzero_when_its_loop_dies(mosquitto, tmp_path, monkeypatch):
    """`edgefleet controller` exits with the operation status (systemd restarts it) instead of
    idling connected."""
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path))
    monkeypatch.setattr(FleetController, "tick", TickBomb.tick)
    db = tmp_path / "fleet.db"
    open_registry(str(db)).close()
    outcome = []
    runner = threading.Thread(target=lambda: outcome.append(cli_main(
        ["controller", "--broker", "mqtt://%s:%d" % (mosquitto.host, mosquitto.port), "--db", str(db),
         "--id", "ctrl-cli"])))
    # wait_for_signal installs a SIGTERM handler, which only the main thread may do.
    monkeypatch.setattr("signal.signal", lambda *a: None)
    runner.start()
    runner.join(30)
    assert outcome == [EXIT_OPERATION]
