"""`edgefleet model add|list|inspect|remove`: the user's own models (docs/models.md).

A model the user adds lives in <state home>/models/NAME/ (edgefleet.models.user_models_dir()),
beside the bundled ones in the installed package, and every command that takes model names
(bundle, flash, placement's manifests) sees both. `add` checks the model the way the bundled
ones are checked (controller/modelcheck.py) in a temporary folder next to the destination and
renames it into place only when every check passed, so a refused model leaves nothing behind.
"""
import json
import os
import re
import shutil
import tempfile

from edgefleet import models as models_pkg

from ..errors import ConfigError, EdgefleetError

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
KINDS = (("micropython", "MCU engine"), ("cpython", "Pi LiteRT"))


def _read_model(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError("%s: cannot read the model: %s" % (path, e.strerror or e)) from None


def _check_name(name):
    if not NAME_PATTERN.match(name):
        raise ConfigError("model name %r: use 1-40 lowercase letters, digits, '_' or '-', starting "
                          "with a letter or digit" % name)
    if models_pkg.source(name) == models_pkg.BUNDLED:
        raise ConfigError("model name %r is a bundled model's: choose another name (--name)" % name)
    if models_pkg.source(name) == models_pkg.USER:
        raise ConfigError("model %r exists already (%s): `edgefleet model remove %s` first" % (
            name, models_pkg.model_dir(name), name))


def _read_labels(path):
    try:
        with open(path) as f:
            labels = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise ConfigError("%s: cannot read the labels: %s" % (path, e.strerror or e)) from None
    if not labels:
        raise ConfigError("%s: no labels (one class name a line)" % path)
    return labels


def _op_lines(table):
    rows = ["  %-3s %-22s %-12s %s" % ("#", "op", KINDS[0][1], KINDS[1][1])]
    for row in table["ops"]:
        rows.append("  %-3d %-22s %-12s %s" % (row["index"], row["name"],
                                                 "yes" if row["micropython"] is None else "NO",
                                                 "yes" if row["cpython"] is None else "NO"))
    return rows


def _unsupported(table, kind):
    """'NAME (op 3: why), ...' for every op that does not run on `kind`."""
    return ", ".join("%s (op %d: %s)" % (row["name"], row["index"], row[kind])
                     for row in table["ops"] if row[kind] is not None)


def _require_checkers():
    """The runtimes `add` checks a model with; a missing one is the command that installs it."""
    from ..errors import MissingExtra
    from ..extras import install_hint
    for modules, package, extra in ((("numpy",), "numpy", "pi"),
                                    (("ai_edge_litert", "tflite_runtime"), "ai-edge-litert", "pi"),
                                    (("tflite_micro",), "tflite-micro", "test")):
        for module in modules:
            try:
                __import__(module)
                break
            except ImportError:
                pass
        else:
            raise MissingExtra("checking a model needs %s: %s" % (package, install_hint(extra)))


def cmd_add(args):
    from .. import modelcheck
    from ..extras import micropython_build, require_micropython
    _require_checkers()
    np = modelcheck._np()
    name = args.name or os.path.splitext(os.path.basename(args.file))[0]
    _check_name(name)
    model_bytes = _read_model(args.file)
    table = modelcheck.op_table(model_bytes, args.file)
    for line in _op_lines(table):
        print(line)
    on_mcu = modelcheck.runs_on(table, modelcheck.MCU)
    on_pi = modelcheck.runs_on(table, modelcheck.PI)
    mcu_problems = _unsupported(table, "micropython") or table["mcu_error"]
    pi_problems = _unsupported(table, "cpython") or table["pi_error"]
    if not on_pi and not on_mcu:
        raise ConfigError("%s: no board kind can run it: the MCU engine cannot run %s; the Pi-class "
                          "LiteRT runtime cannot run %s" % (args.file, mcu_problems, pi_problems))
    if not on_pi:
        # The Pi-class boards run everything the MCUs do: a model LiteRT refuses is not for this fleet.
        raise ConfigError("%s: the Pi-class LiteRT runtime cannot run %s" % (args.file, pi_problems))
    if not on_mcu and not args.pi_only:
        raise ConfigError("%s: the MCU engine cannot run %s; add it with --pi-only to place it on "
                          "Pi-class boards only" % (args.file, mcu_problems))

    m = modelcheck.parse(model_bytes, args.file)
    labels = _read_labels(args.labels) if args.labels else None
    truth = None
    if args.samples:
        samples_path = os.path.join(args.samples, "samples.bin")
        labels_path = os.path.join(args.samples, "labels.bin")
        if not os.path.isfile(samples_path):
            raise ConfigError("%s: no samples.bin (the model's inputs, int8 or float32 as it takes them, concatenated)" % args.samples)
        samples, truth = modelcheck.read_samples(m, samples_path, labels_path if os.path.isfile(labels_path) else None)
        note = "the user's samples (%s)" % os.path.abspath(args.samples)
    else:
        samples = modelcheck.generated_inputs(m)
        note = "generated: %d inputs drawn %s (seed 0); no labels, so no accuracy" % (
            len(samples), "uniformly over int8" if samples.dtype == np.int8 else "from normal(0, 2) as float32")

    heap = rom_heap = word = None
    if on_mcu:
        try:
            heap = modelcheck.measure_heap(args.file) + modelcheck.HEAP_MARGIN
            rom_heap = modelcheck.measure_heap(args.file, "romfs") + modelcheck.HEAP_MARGIN
        except modelcheck.CannotRun as e:
            raise ConfigError("%s: the MCU engine cannot run it under MicroPython: %s" % (args.file, e.reason)) from None
        word = micropython_build(require_micropython("measuring a model's MicroPython heap"))[1]
    try:
        manifest, vectors, mismatches = modelcheck.build_manifest(
            model_bytes, samples, truth, name, labels=labels, description=args.description or "",
            samples_note=note, with_engine=on_mcu)
    except (RuntimeError, ValueError) as e:
        raise ConfigError("%s: a runtime refused to run it: %s" % (args.file, " ".join(str(e).split()))) from None
    if on_mcu:
        # At the word size of the MicroPython that measured them: a 32-bit build's figures are
        # for 32-bit nodes only.
        modelcheck.heap_record(manifest, word).update({"mcu_heap_bytes": heap, "mcu_rom_heap_bytes": rom_heap})
    if mismatches:
        raise EdgefleetError("%s: the MCU engine's output differs from TFLite Micro's on %d of %d inputs "
                             "(a bug in the engine: please report it with the model)" % (args.file, mismatches, len(samples)))
    if not on_mcu:
        manifest["mcu_placeable"] = False
        manifest["mcu_unsupported"] = _unsupported(table, "micropython") or table["mcu_error"]
    manifest["source"] = models_pkg.USER

    home = models_pkg.user_models_dir()
    os.makedirs(home, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".adding-%s-" % name, dir=home)
    try:
        shutil.copyfile(args.file, os.path.join(staging, "model.tflite"))
        samples.tofile(os.path.join(staging, "samples.bin"))   # int8, or float32 for a float-input model
        if truth is not None:
            truth.astype(np.uint8).tofile(os.path.join(staging, "labels.bin"))
        for filename, obj in (("manifest.json", manifest), ("vectors.json", vectors)):
            with open(os.path.join(staging, filename), "w") as f:
                json.dump(obj, f, indent=1)
                f.write("\n")
        os.rename(staging, os.path.join(home, name))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    where = ("MCU heap need %d bytes (%d-bit MicroPython), bit-exact with TFLite Micro on %d inputs"
             % (heap, word, len(samples)) if on_mcu else "Pi only (not placeable on MCUs)")
    print("edgefleet: added model %s: %d ops, %s; %s" % (name, len(table["ops"]), where, os.path.join(home, name)))
    return 0


def _heap_text(manifest):
    if manifest.get("mcu_placeable") is False:
        return "Pi only"
    if manifest.get("mcu_heap_bytes") is None:
        measured = manifest.get("word_32", {}).get("mcu_heap_bytes")
        return "%d (32-bit)" % measured if measured is not None else "Pi only"
    return "%d" % manifest["mcu_heap_bytes"]


def _op_count(name):
    from edgefleet.firmware.engine import model as engine_model
    with open(os.path.join(models_pkg.model_dir(name), "model.tflite"), "rb") as f:
        return len(engine_model.Model(f.read()).graph.ops)


def cmd_list(args):
    rows = []
    for name in models_pkg.names():
        m = models_pkg.manifest(name)
        inp = m["inputs"][0]
        rows.append({"name": name, "source": models_pkg.source(name),
                     "input": "%s %s" % ("x".join(str(n) for n in inp["shape"]), inp["dtype"]),
                     "ops": _op_count(name), "mcu_heap": _heap_text(m)})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("%-20s %-8s %-16s %-4s %s" % ("NAME", "SOURCE", "INPUT", "OPS", "MCU HEAP"))   # OPS: operators in the graph
    for r in rows:
        print("%-20s %-8s %-16s %-4d %s" % (r["name"], r["source"], r["input"], r["ops"], r["mcu_heap"]))
    return 0


def cmd_inspect(args):
    from .. import modelcheck
    if models_pkg.source(args.model):
        folder = models_pkg.model_dir(args.model)
        path = os.path.join(folder, "model.tflite")
        manifest = models_pkg.manifest(args.model)
    elif os.path.isfile(args.model):
        path, manifest = args.model, None
    else:
        raise ConfigError("no model or file %r (models: %s)" % (args.model, ", ".join(models_pkg.names()) or "none"))
    table = modelcheck.op_table(_read_model(path), path)
    print("%s:" % path)
    for line in _op_lines(table):
        print(line)
    for kind, label in KINDS:
        if not modelcheck.runs_on(table, kind):
            print("%s cannot run it: %s" % (label, _unsupported(table, kind) or table["mcu_error" if kind == "micropython" else "pi_error"]))
    if manifest is not None:
        print("manifest (%s):" % models_pkg.source(args.model))
        print(json.dumps(manifest, indent=1))
    return 0


def _workloads_using(name):
    """Ids of the registry's declared workloads that run model `name` (none without a registry).
    A fleet file not yet applied is not looked at: it is checked against the models when applied."""
    from .. import paths
    from ..store import open_registry
    if not os.path.exists(paths.registry_file()):
        return []
    registry = open_registry(paths.registry_file(), readonly=True)
    try:
        return [wl["id"] for wl in registry.workloads() if wl["model"] == name]
    finally:
        registry.close()


def cmd_remove(args):
    source = models_pkg.source(args.model)
    if source is None:
        raise ConfigError("no model %r (user models: %s)" % (args.model, ", ".join(models_pkg.user_names()) or "none"))
    if source == models_pkg.BUNDLED:
        raise ConfigError("model %r is bundled with edgefleet and cannot be removed" % args.model)
    users = _workloads_using(args.model)
    if users:
        raise ConfigError("model %r is used by workload%s %s in the registry: remove %s from the fleet first" % (
            args.model, "s" if len(users) > 1 else "", ", ".join(users), "them" if len(users) > 1 else "it"))
    shutil.rmtree(models_pkg.model_dir(args.model))
    print("edgefleet: removed model %s" % args.model)
    return 0


def register(sub):
    p = sub.add_parser("model", help="bring your own .tflite model: add, list, inspect, remove (docs/models.md)")
    msub = p.add_subparsers(dest="model_command", required=True)
    a = msub.add_parser("add", help="check a .tflite model on every board kind and add it to $EDGEFLEET_HOME/models")
    a.add_argument("file", help="the .tflite file (int8 quantized, as the MCU engine runs; float32 "
                                          "input/output around int8 ops is fine)")
    a.add_argument("--name", help="the model's name (default: the file's name without .tflite)")
    a.add_argument("--labels", help="text file with one class name a line")
    a.add_argument("--samples", metavar="DIR", help="folder with samples.bin (inputs of the model's type, concatenated) and "
                                                     "optionally labels.bin (uint8 classes); default: generated inputs")
    a.add_argument("--description", help="one line about the model")
    a.add_argument("--pi-only", action="store_true", help="accept a model the MCU engine cannot run: it is then "
                                                          "placed on Pi-class boards only")
    a.set_defaults(func=cmd_add)
    ls = msub.add_parser("list", help="bundled and user models: input, ops, MicroPython heap need")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    i = msub.add_parser("inspect", help="a model's (or a .tflite file's) ops per board kind, and its manifest")
    i.add_argument("model", help="a model name or a .tflite file")
    i.set_defaults(func=cmd_inspect)
    r = msub.add_parser("remove", help="delete a model you added (bundled ones stay)")
    r.add_argument("model")
    r.set_defaults(func=cmd_remove)
