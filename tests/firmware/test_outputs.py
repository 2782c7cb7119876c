# A workload's output spec (firmware/outputs.py) and what a worker makes of it
# (firmware/worker.py emit_result), under CPython and MicroPython.
import json

from firmware import assignment, worker
from firmware.outputs import Outputs, OutputSpecError
from unit import raises

# Scores 1/256 apart from -128 up, as the digits models quantize their softmax.
QUANT = (0.00390625, -128)


def _q(values):
    """int8 outputs (as an int8 arena's unsigned bytes) for these dequantised values."""
    return bytearray([(int(round(v / QUANT[0])) + QUANT[1]) & 0xFF for v in values])


def test_without_a_spec_the_top_class_as_before():
    out = Outputs({}, QUANT, 4)
    label, score, fields = out.read(_q([0.1, 0.6, 0.2, 0.1]))
    assert (label, fields) == (1, {}) and abs(score - 0.6) < 0.004


def test_top_k_lists_the_best_classes_best_first():
    out = Outputs({"top_k": 3}, QUANT, 5)
    label, _, fields = out.read(_q([0.05, 0.5, 0.1, 0.3, 0.05]))
    assert label == 1 and [i for i, _ in fields["top"]] == [1, 3, 2]
    assert abs(fields["top"][1][1] - 0.3) < 0.004


def test_the_best_classes_carry_their_names_where_the_model_has_them():
    names = ["cat", "dog", "owl", "eel", "ant"]
    out = Outputs({"top_k": 2}, QUANT, 5, names)
    _, _, fields = out.read(_q([0.05, 0.5, 0.1, 0.3, 0.05]))
    assert [(i, name) for i, _, name in fields["top"]] == [(1, "dog"), (3, "eel")]
    # Names that do not fit the model (too few, not strings) are left out, not half used.
    for bad in (names[:4], [1, 2, 3, 4, 5]):
        _, _, fields = Outputs({"top_k": 2}, QUANT, 5, bad).read(_q([0.05, 0.5, 0.1, 0.3, 0.05]))
        assert all(len(entry) == 2 for entry in fields["top"])


def test_values_carry_every_output_dequantised():
    out = Outputs({"kind": "values"}, QUANT, 3)
    label, _, fields = out.read(_q([0.25, 0.75, 0.5]))
    assert label == 1 and fields["out"] == [0.25, 0.75, 0.5]


def test_a_watched_output_tells_each_crossing_once():
    out = Outputs({"kind": "values", "watch": {"index": 2, "above": 0.5}, "pin": 4}, QUANT, 3)
    seen = []
    for v in (0.1, 0.6, 0.7, 0.8, 0.4, 0.3, 0.9):
        out.read(_q([0.0, 0.0, v]))
        seen.append(out.changed)
    assert seen == [None, True, None, None, False, None, True]
    assert out.alarm and abs(out.value - 0.9) < 0.004
    assert out.describe() == "output 2 above 0.5"


def test_below_watches_a_falling_signal():
    out = Outputs({"watch": {"below": 0.2}}, QUANT, 2)
    out.read(_q([0.5, 0.5]))
    assert out.changed is None
    out.read(_q([0.1, 0.9]))
    assert out.changed is True


def test_a_bad_spec_is_refused_naming_what():
    for spec, words in (
            ("values", "must be a table"), ({"kind": "regress"}, "output.kind"), ({"top_k": 0}, "top_k"),
            ({"top_k": 11}, "top_k"), ({"top_k": True}, "top_k"), ({"watch": {"index": 9, "above": 1}}, "index"),
            ({"watch": {"index": 0}}, "'above' or 'below'"), ({"watch": {"above": "high"}}, "watch.above"),
            ({"watch": {"above": 1, "when": 2}}, "unknown key"), ({"pin": 3}, "needs output.watch"),
            ({"pin": -1, "watch": {"above": 1}}, "output.pin"), ({"colour": 1}, "unknown key")):
        e = raises(OutputSpecError, Outputs, spec, QUANT, 4)
        assert words in str(e), (spec, str(e))
    e = raises(OutputSpecError, Outputs, {"kind": "values"}, QUANT, 40)
    assert "at most 32" in str(e)


class _Node:
    """What emit_result reads and calls on a node."""

    def __init__(self):
        self.id, self.boot, self.result_seq = "n-1", 1, 0
        self.events, self.pins, self.records = [], [], []
        self.outbox = self
        self.hal = self

    def uptime_ms(self):
        return 1000

    def append(self, kind, boot, seq, payload):
        self.records.append(payload)

    def event(self, level, kind, msg, data=None):
        self.events.append((level, kind, data))

    def pin_out(self, pin, on):
        self.pins.append((pin, on))


class _Worker:
    id = "w"

    def __init__(self, spec):
        self.outputs = Outputs(spec, QUANT, 3)

    def read_outputs(self, outputs):
        return self.outputs.read(outputs)


def test_a_worker_reports_values_raises_events_and_drives_its_pin():
    node, w = _Node(), _Worker({"kind": "values", "watch": {"index": 0, "above": 0.5}, "pin": 7})
    for i, v in enumerate((0.2, 0.9, 0.95, 0.1)):
        label, score, fields = w.read_outputs(_q([v, 0.0, 0.0]))
        worker.emit_result(node, w, label, score, 900, None, i, fields)
    assert len(node.records) == 4 and json.loads(node.records[1])["out"] == [0.89844, 0.0, 0.0]
    assert [(level, kind, data["in"]) for level, kind, data in node.events] == [
        ("warn", "threshold", 1), ("info", "threshold_clear", 3)]
    assert node.pins == [(7, True), (7, False)]


def test_a_new_output_spec_restarts_the_workload():
    running = {"w": {"id": "w", "model": "m", "rate": 1, "input": {"kind": "samples"}}}
    desired = [{"id": "w", "model": "m", "rate": 1, "input": {"kind": "samples"}, "output": {"top_k": 3}}]
    assert assignment.changes(running, desired) == (["w"], desired)
