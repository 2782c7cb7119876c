"""Fleet files: the workloads an operator declares, in TOML.

    [[workload]]
    id = "digits"            # unique, a-z 0-9 - _
    model = "digits_dense"   # a folder in models/
    rate = 5                 # inferences per second per replica
    replicas = 2             # optional, default 1
    input = { kind = "samples" }          # optional, default shown: the model's bundled samples
    # or inputs published to PREFIX/wl/ID/input (docs/protocol.md "Inputs"), rate then being the
    # publisher's expected rate:  input = { kind = "topic", buffer = 8 }   # buffer optional, 1-64
    constraints = { runtime = "micropython", boards = ["esp32"] }  # optional
    # optional: also labels = ["camera"] (every one on the node), prefer_mains = true
    resources = { arena_bytes = 60000, cpu_share = 15 }   # optional (cpu_share: % of a node's CPU)
    priority = 10            # optional, default 0: higher is placed first and kept when room is short
    output = { kind = "values", watch = { index = 0, above = 0.8 }, pin = 2 }   # optional:
    # what results carry and what raises an event (firmware/outputs.py); default: the top class
"""
import tomllib

import tomli_w

from edgefleet.firmware.outputs import MAX_VALUES, Outputs, OutputSpecError
from edgefleet.firmware.source_camera import MAX_RATE_HZ as CAMERA_MAX_RATE_HZ
from edgefleet.firmware.source_sensor import MAX_RATE_HZ
from edgefleet.firmware.source_topic import MAX_BUFFER
from edgefleet.firmware.protocol import valid_node_id

from .. import choices
from ..errors import ConfigError

ALLOWED_KEYS = {"id", "model", "rate", "replicas", "input", "constraints", "resources", "priority", "output"}
CONSTRAINT_KEYS = ("runtime", "boards", "labels", "prefer_mains")
RESOURCE_KEYS = ("arena_bytes", "cpu_share")
# Input kinds (firmware/sources.py) and the keys each may hold besides `kind` (start and until
# are the controller's, the stream ledger's, never the operator's).
INPUT_KEYS = {"samples": set(), "sensor": {"sensor", "rate_hz", "hop", "scale", "offset"}, "topic": {"buffer"},
              "camera": {"rate_hz", "scale", "offset", "grayscale"}}


def _check_sensor_input(source, where):
    """What the node would refuse, refused here with the same meaning (the window and the
    quantisation depend on the model and are the node's to check)."""
    if not isinstance(source.get("sensor"), str) or not source["sensor"]:
        raise ConfigError("%s.sensor must name a sensor the boards declare (e.g. \"adc0\")" % where)
    rate = source.get("rate_hz")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= MAX_RATE_HZ:
        raise ConfigError("%s.rate_hz must be a number above 0, at most %d" % (where, MAX_RATE_HZ))
    hop = source.get("hop", 1)
    if isinstance(hop, bool) or not isinstance(hop, int) or hop < 1:
        raise ConfigError("%s.hop must be an integer >= 1" % where)
    for key in ("scale", "offset"):
        if key in source and (isinstance(source[key], bool) or not isinstance(source[key], (int, float))):
            raise ConfigError("%s.%s must be a number" % (where, key))


def _check_camera_input(source, where):
    """As the node would (firmware/source_camera.py); whether the model takes an image is the
    node's to check."""
    rate = source.get("rate_hz", 1)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= CAMERA_MAX_RATE_HZ:
        raise ConfigError("%s.rate_hz must be a number above 0, at most %d (frames a second)" % (where, CAMERA_MAX_RATE_HZ))
    for key in ("scale", "offset"):
        if key in source and (isinstance(source[key], bool) or not isinstance(source[key], (int, float))):
            raise ConfigError("%s.%s must be a number" % (where, key))
    if not isinstance(source.get("grayscale", False), bool):
        raise ConfigError("%s.grayscale must be true or false" % where)


def _output_count(known_models, model):
    """How many values the model outputs, from its manifest where the caller gave manifests."""
    manifest = known_models.get(model) if isinstance(known_models, dict) else None
    if not manifest or not manifest.get("outputs"):
        return MAX_VALUES
    count = 1
    for dim in manifest["outputs"][0]["shape"]:
        count *= dim
    return count


def parse_workload(raw, where, known_models=None):
    """known_models: the model names, or {name: manifest} to check the output spec against the
    model's outputs as well."""
    if not isinstance(raw, dict):
        raise ConfigError("%s: must be a table" % where)
    unknown = set(raw) - ALLOWED_KEYS
    if unknown:
        raise ConfigError("%s: unknown keys %s" % (where, ", ".join(sorted(unknown))))
    wid = raw.get("id")
    if not isinstance(wid, str) or not valid_node_id(wid):
        raise ConfigError("%s: 'id' must be 1-32 chars of a-z 0-9 - _" % where)
    model = raw.get("model")
    if not isinstance(model, str):
        raise ConfigError("%s (%s): 'model' is required" % (where, wid))
    if known_models is not None and model not in known_models:
        raise ConfigError("%s (%s): unknown model %r (known: %s)" % (where, wid, model, ", ".join(sorted(known_models))))
    rate = raw.get("rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
        raise ConfigError("%s (%s): 'rate' must be a number > 0" % (where, wid))
    replicas = raw.get("replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ConfigError("%s (%s): 'replicas' must be an integer >= 1" % (where, wid))
    source = raw.get("input", {"kind": "samples"})
    if not isinstance(source, dict) or source.get("kind") not in INPUT_KEYS:
        raise ConfigError("%s (%s): input.kind must be one of %s" % (where, wid, ", ".join(sorted(INPUT_KEYS))))
    unknown = set(source) - INPUT_KEYS[source["kind"]] - {"kind"}
    if unknown:
        raise ConfigError("%s (%s): input of kind %s may not hold %s" % (where, wid, source["kind"], ", ".join(sorted(unknown))))
    if source["kind"] == "sensor":
        _check_sensor_input(source, "%s (%s): input" % (where, wid))
    if "buffer" in source and (isinstance(source["buffer"], bool) or not isinstance(source["buffer"], int)
                               or not 1 <= source["buffer"] <= MAX_BUFFER):
        raise ConfigError("%s (%s): input.buffer must be an integer 1-%d" % (where, wid, MAX_BUFFER))
    if source["kind"] == "camera":
        _check_camera_input(source, "%s (%s): input" % (where, wid))
    constraints = raw.get("constraints", {})
    if not isinstance(constraints, dict) or set(constraints) - set(CONSTRAINT_KEYS):
        raise ConfigError("%s (%s): constraints may hold %s" % (where, wid, ", ".join(CONSTRAINT_KEYS)))
    for key in ("boards", "labels"):
        if key in constraints and not (isinstance(constraints[key], list) and all(isinstance(v, str) for v in constraints[key])):
            raise ConfigError("%s (%s): constraints.%s must be a list of strings" % (where, wid, key))
    # A runtime or board no node can have would leave the workload pending for ever.
    if "runtime" in constraints:
        choices.check_runtime(constraints["runtime"], "%s (%s): constraints.runtime" % (where, wid))
    for board in constraints.get("boards", ()):
        choices.check_board(board, constraints.get("runtime"), "%s (%s): constraints.boards" % (where, wid))
    if "prefer_mains" in constraints and not isinstance(constraints["prefer_mains"], bool):
        raise ConfigError("%s (%s): constraints.prefer_mains must be true or false" % (where, wid))
    resources = raw.get("resources", {})
    if not isinstance(resources, dict) or set(resources) - set(RESOURCE_KEYS):
        raise ConfigError("%s (%s): resources may hold %s" % (where, wid, ", ".join(RESOURCE_KEYS)))
    for key in RESOURCE_KEYS:
        value = resources.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError("%s (%s): resources.%s must be a number >= 0" % (where, wid, key))
    if resources.get("cpu_share", 0) > 100:
        raise ConfigError("%s (%s): resources.cpu_share is a percentage of one node's CPU (0-100)" % (where, wid))
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigError("%s (%s): 'priority' must be an integer" % (where, wid))
    output = raw.get("output")
    if output is not None:
        try:   # the node's own reader judges it, as the node will
            Outputs(output, (1.0, 0), _output_count(known_models, model))
        except OutputSpecError as e:
            raise ConfigError("%s (%s): %s" % (where, wid, e)) from e
    out = {"id": wid, "model": model, "rate": float(rate), "replicas": replicas, "input": dict(source),
           "constraints": dict(constraints)}
    if resources:
        out["resources"] = dict(resources)
    if priority:
        out["priority"] = priority
    if output is not None:
        out["output"] = dict(output)
    return out


def parse(text, known_models=None, source="fleet file"):
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("%s: %s" % (source, e)) from e
    workloads = []
    for i, raw in enumerate(data.get("workload", [])):
        workloads.append(parse_workload(raw, "%s: workload[%d]" % (source, i), known_models))
    ids = [w["id"] for w in workloads]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError("%s: workload ids repeated: %s" % (source, ", ".join(dupes)))
    return workloads


def load(path, known_models=None):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("cannot read fleet file %s: %s" % (path, e.strerror)) from e
    return parse(text, known_models, path)


def dump(workloads):
    """The fleet file declaring exactly these workloads (what `edgefleet export` writes)."""
    tables = []
    for wl in sorted(workloads, key=lambda w: w["id"]):
        tables.append({key: wl[key] for key in ("id", "model", "rate", "replicas", "priority", "input", "constraints", "resources",
                                                "output")
                       if key in wl and wl[key] not in ({}, None) and not (key == "priority" and wl[key] == 0)})
    return "# edgefleet fleet file: the declared workloads (edgefleet export)\n\n" + tomli_w.dumps({"workload": tables})
