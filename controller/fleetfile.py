"""Fleet files: the workloads an operator declares, in TOML.

    [[workload]]
    id = "digits"            # unique, a-z 0-9 - _
    model = "digits_dense"   # a folder in models/
    rate = 5                 # inferences per second per replica
    replicas = 2             # optional, default 1
    input = { kind = "samples" }          # optional, default shown
    constraints = { runtime = "micropython", boards = ["esp32"] }  # optional
"""
import tomllib

from edgefleet.firmware.protocol import valid_node_id

from .errors import ConfigError

ALLOWED_KEYS = {"id", "model", "rate", "replicas", "input", "constraints"}


def parse_workload(raw, where, known_models=None):
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
    if not isinstance(source, dict) or source.get("kind") != "samples":
        raise ConfigError("%s (%s): input.kind must be 'samples'" % (where, wid))
    constraints = raw.get("constraints", {})
    if not isinstance(constraints, dict) or set(constraints) - {"runtime", "boards"}:
        raise ConfigError("%s (%s): constraints may hold 'runtime' and 'boards'" % (where, wid))
    return {"id": wid, "model": model, "rate": float(rate), "replicas": replicas, "input": dict(source),
            "constraints": dict(constraints)}


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
