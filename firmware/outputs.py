# What a result says of a model's outputs, as the workload's `output` spec asks
# (docs/protocol.md, "Results"). Without a spec a node reports the top-1 class (backends.top1)
# and never imports this module: a microcontroller pays for it only when a workload uses it.
#
#   kind    "classify" (default): the best class as label/score; top_k > 1 adds `top`, the k
#           best as [index, score, name], best first (name: the model's class name, from its
#           manifest's labels, where it has them)
#           "values": every output dequantised, in `out` (regression, anomaly scores); label
#           and score are still the largest output's, so every view of results works
#   watch   {"index": i, "above": x, "below": y}: output i (dequantised) is watched; when it
#           goes over `above` or under `below` the node raises a `threshold` event, and a
#           `threshold_clear` one when it comes back. Only crossings are told: a signal
#           that stays high raises one event, not one per result.
#   pin     a GPIO pin (the board's numbering) held high while the watched condition holds,
#           through the board's HAL
from .errors import FirmwareError

KINDS = ("classify", "values")
MAX_TOP_K = 10
# A result message is at most 1024 bytes (protocol.py): 32 values of ~10 characters fit.
MAX_VALUES = 32
SPEC_KEYS = ("kind", "top_k", "watch", "pin")
WATCH_KEYS = ("index", "above", "below")


class OutputSpecError(FirmwareError):
    """The workload's output spec cannot be read on this model; the workload is refused."""


def _number(value):
    return type(value) in (int, float)


def _int(value):
    return type(value) is int


def class_names(model_dir, spec):
    """The model's class names (its manifest's `labels`) when the spec lists the k best; None
    otherwise, or when the manifest has none: nothing is read for a spec that does not need it."""
    if type(spec) is not dict or spec.get("top_k", 1) == 1:
        return None
    import json
    try:
        with open(model_dir + "/manifest.json") as f:
            labels = json.load(f).get("labels")
    except (OSError, ValueError):
        return None
    return labels if type(labels) is list else None


class Outputs:
    def __init__(self, spec, quant, count, names=None):
        if type(spec) is not dict:
            raise OutputSpecError("output must be a table")
        for key in spec:
            if key not in SPEC_KEYS:
                raise OutputSpecError("output: unknown key %r" % key)
        self.kind = spec.get("kind", "classify")
        if self.kind not in KINDS:
            raise OutputSpecError("output.kind must be one of %s, not %r" % (", ".join(KINDS), self.kind))
        self.scale, self.zero_point = quant[0], quant[1]
        self.count = count
        self.top_k = spec.get("top_k", 1)
        if not _int(self.top_k) or not 1 <= self.top_k <= min(MAX_TOP_K, count):
            raise OutputSpecError("output.top_k must be an integer from 1 to %d for this model" % min(MAX_TOP_K, count))
        if self.kind == "values" and count > MAX_VALUES:
            raise OutputSpecError("output.kind 'values': the model has %d outputs, a result carries at most %d" % (
                count, MAX_VALUES))
        watch = spec.get("watch")
        self.index = self.above = self.below = None
        if watch is not None:
            if type(watch) is not dict or not watch:
                raise OutputSpecError("output.watch must be a table")
            for key in watch:
                if key not in WATCH_KEYS:
                    raise OutputSpecError("output.watch: unknown key %r" % key)
            self.index = watch.get("index", 0)
            if not _int(self.index) or not 0 <= self.index < count:
                raise OutputSpecError("output.watch.index must be an integer from 0 to %d" % (count - 1))
            self.above, self.below = watch.get("above"), watch.get("below")
            if self.above is None and self.below is None:
                raise OutputSpecError("output.watch needs 'above' or 'below'")
            for name, bound in (("above", self.above), ("below", self.below)):
                if bound is not None and not _number(bound):
                    raise OutputSpecError("output.watch.%s must be a number" % name)
        self.pin = spec.get("pin")
        if self.pin is not None and (not _int(self.pin) or not 0 <= self.pin <= 255):
            raise OutputSpecError("output.pin must be a GPIO number from 0 to 255")
        if self.pin is not None and self.index is None:
            raise OutputSpecError("output.pin needs output.watch: it shows the watched condition")
        ok = type(names) is list and len(names) == count
        if ok:
            for name in names:
                if type(name) is not str:
                    ok = False
        self.names = names if ok else None
        self.alarm = False     # the watched condition, as of the last result
        self.changed = None    # True: it began with the last result; False: it ended; None: neither
        self.value = None      # the watched output's value in the last result

    def _value(self, q):
        if q > 127:   # an int8 arena read as unsigned bytes
            q -= 256
        return (q - self.zero_point) * self.scale

    def read(self, outputs):
        """(label, score, fields the result adds) of one inference's int8 outputs."""
        count = self.count
        best, best_q = 0, -129
        for i in range(count):
            q = outputs[i]
            if q > 127:
                q -= 256
            if q > best_q:
                best, best_q = i, q
        fields = {}
        if self.kind == "values":
            fields["out"] = [round(self._value(outputs[i]), 5) for i in range(count)]
        elif self.top_k > 1:
            ranked = sorted(range(count), key=lambda i: -self._value(outputs[i]))
            names = self.names
            if names is None:
                fields["top"] = [[i, round(self._value(outputs[i]), 5)] for i in ranked[:self.top_k]]
            else:
                fields["top"] = [[i, round(self._value(outputs[i]), 5), names[i]] for i in ranked[:self.top_k]]
        self.changed = None
        if self.index is not None:
            value = self.value = self._value(outputs[self.index])
            alarm = (self.above is not None and value > self.above) or (self.below is not None and value < self.below)
            if alarm != self.alarm:
                self.alarm = self.changed = alarm
        return best, (best_q - self.zero_point) * self.scale, fields

    def describe(self):
        """The watched condition in words, for the events."""
        parts = []
        if self.above is not None:
            parts.append("above %g" % self.above)
        if self.below is not None:
            parts.append("below %g" % self.below)
        return "output %d %s" % (self.index, " or ".join(parts))
