"""`edgefleet model add|list|inspect|remove` run as a process, as a user meets it, with its own
EDGEFLEET_HOME: a model is checked with the real runtimes (the MCU engine, TFLite Micro, LiteRT,
the MicroPython unix port for its heap need) and lands in <home>/models/NAME only when every
check passed; the rest of edgefleet (bundles, placement) then sees it beside the bundled ones."""
import json
import os
import subprocess
import sys

import pytest

from edgefleet import models
from edgefleet.boards import catalog
from edgefleet.controller.errors import EXIT_CONFIG
from edgefleet.controller.fleet import placement

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
DENSE = os.path.join(models.MODELS_DIR, "digits_dense")

pytestmark = pytest.mark.micropython


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    h.mkdir()
    (tmp_path / "work").mkdir()
    # In this process too, so that models.names() and placement see the same user models.
    monkeypatch.setenv("EDGEFLEET_HOME", str(h))
    return h


def edgefleet(home, *argv, timeout=300, prelude=""):
    env = dict(os.environ, EDGEFLEET_HOME=str(home))
    code = "import sys\n%s\nfrom edgefleet.controller.cli import main\nsys.exit(main(sys.argv[1:]))" % prelude
    return subprocess.run([sys.executable, "-c", code] + list(argv), cwd=str(home.parent / "work"), env=env,
                          capture_output=True, text=True, timeout=timeout)


def error_lines(proc):
    """The lines edgefleet itself wrote on stderr (LiteRT logs an INFO line of its own)."""
    return [line for line in proc.stderr.splitlines() if not line.startswith("INFO: ")]


def assert_one_error(proc, code):
    lines = error_lines(proc)
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("edgefleet: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def user_model_entries(home):
    folder = home / "models"
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_add_a_bundled_model_under_a_new_name(home, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join("%d\n" % i for i in range(10)))
    proc = edgefleet(home, "model", "add", os.path.join(DENSE, "model.tflite"), "--name", "mydense",
                     "--samples", DENSE, "--labels", str(labels))
    assert proc.returncode == 0, proc.stderr
    assert "added model mydense" in proc.stdout
    folder = home / "models" / "mydense"
    assert sorted(os.listdir(folder)) == ["labels.bin", "manifest.json", "model.tflite", "samples.bin", "vectors.json"]

    manifest = json.loads((folder / "manifest.json").read_text())
    bundled = models.manifest("digits_dense")
    # The bundled manifest's fields, with the same values where they describe the same file
    # and samples (the accuracies included: the same held-out split and labels); measured on
    # the venv's 64-bit MicroPython, it has no 32-bit figures (docs/placement.md "Word size").
    assert set(bundled) - {"word_32"} <= set(manifest) and "word_32" not in manifest
    assert "(64-bit MicroPython)" in proc.stdout, proc.stdout
    for key in ("sha256", "flash_bytes", "inputs", "outputs", "ops", "arena_bytes", "accuracy", "labels"):
        assert manifest[key] == bundled[key], key
    # Measured again under MicroPython: within the ~4 KB fragmentation band of the bundled record.
    assert abs(manifest["mcu_heap_bytes"] - bundled["mcu_heap_bytes"]) <= 4096
    assert manifest["samples"]["count"] == bundled["samples"]["count"]
    vectors = json.loads((folder / "vectors.json").read_text())
    bundled_vectors = json.loads(open(os.path.join(DENSE, "vectors.json")).read())
    assert vectors["vectors"] == bundled_vectors["vectors"]

    # The rest of edgefleet sees it beside the bundled ones.
    assert models.names() == ["digits_conv", "digits_dense", "mydense"]
    assert models.source("mydense") == models.USER
    listing = edgefleet(home, "model", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    assert rows["mydense"]["source"] == "user" and rows["digits_dense"]["source"] == "bundled"
    assert rows["mydense"]["mcu_heap"] == str(manifest["mcu_heap_bytes"]) and rows["mydense"]["ops"] == 3

    assert edgefleet(home, "keygen").returncode == 0
    out = tmp_path / "b.efb"
    proc = edgefleet(home, "bundle", "--board", "rpi-pico-w", "--version", "1", "--models", "mydense", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    from edgefleet.controller.deploy import bundle
    from edgefleet.controller.install import keys
    files = [f[0] for f in bundle.inspect(out.read_bytes(), keys.load())["manifest"]["files"]]
    assert "models/mydense/model.tflite" in files and "models/mydense/manifest.json" in files
    assert not any(f.startswith("models/digits_") for f in files)

    # A name taken by a bundled model or an added one is refused.
    line = assert_one_error(edgefleet(home, "model", "add", os.path.join(DENSE, "model.tflite"), "--name",
                                      "digits_dense"), EXIT_CONFIG)
    assert "bundled" in line
    line = assert_one_error(edgefleet(home, "model", "add", os.path.join(DENSE, "model.tflite"), "--name",
                                      "mydense"), EXIT_CONFIG)
    assert "exists already" in line


def test_every_unsupported_op_is_named_and_nothing_is_written(home):
    proc = edgefleet(home, "model", "add", os.path.join(DATA, "conv_unsupported.tflite"))
    line = assert_one_error(proc, EXIT_CONFIG)
    # Both ops the MCU engine has no kernel for, with their positions, in one line.
    assert "L2_POOL_2D (op 2" in line and "RELU (op 6" in line
    assert "no board kind can run it" in line
    # The op table shows every op per board kind.
    table = [row.split() for row in proc.stdout.splitlines()[1:]]
    assert [(r[1], r[2], r[3]) for r in table] == [
        ("CONV_2D", "yes", "yes"), ("DEPTHWISE_CONV_2D", "yes", "yes"), ("L2_POOL_2D", "NO", "NO"),
        ("CONV_2D", "yes", "yes"), ("AVERAGE_POOL_2D", "yes", "yes"), ("FULLY_CONNECTED", "yes", "yes"),
        ("RELU", "NO", "yes")]
    assert user_model_entries(home) == []


def test_every_op_a_kernel_refuses_is_named_not_only_the_first(home):
    # Supported kinds, each used with a fused activation (TANH) the engine has no kernel for.
    line = assert_one_error(edgefleet(home, "model", "add", os.path.join(DATA, "conv_tanh.tflite")), EXIT_CONFIG)
    for op in ("CONV_2D (op 0: fused activation 4)", "DEPTHWISE_CONV_2D (op 1: fused activation 4)",
               "CONV_2D (op 3: fused activation 4)"):
        assert op in line
    assert "MAX_POOL_2D" not in line and "--pi-only" in line
    assert user_model_entries(home) == []


def test_a_model_only_litert_runs_is_added_as_pi_only_and_kept_off_mcus(home, tmp_path):
    path = os.path.join(DATA, "dense_relu.tflite")
    line = assert_one_error(edgefleet(home, "model", "add", path, "--name", "pidense"), EXIT_CONFIG)
    assert "RELU (op 2" in line and "--pi-only" in line
    assert user_model_entries(home) == []

    proc = edgefleet(home, "model", "add", path, "--name", "pidense", "--pi-only")
    assert proc.returncode == 0, proc.stderr
    manifest = models.manifest("pidense")
    assert manifest["mcu_placeable"] is False and "mcu_heap_bytes" not in manifest
    assert "RELU" in manifest["mcu_unsupported"]
    rows = {r["name"]: r for r in json.loads(edgefleet(home, "model", "list", "--json").stdout)}
    assert rows["pidense"]["mcu_heap"] == "Pi only"

    workload = {"id": "w", "model": "pidense"}
    pico = catalog.load("rpi-pico-w")
    mcu = {"id": "n", "board": "rpi-pico-w", "runtime": "micropython", "state": "online",
           "caps": {"heap": pico["heap_bytes"], "models": ["pidense"]}}
    why = placement.fits(workload, mcu, pico, manifest)
    assert why and "Pi-class boards only" in why
    pi = catalog.load("rpi4")
    linux = {"id": "p", "board": "rpi4", "runtime": "cpython", "state": "online",
             "caps": {"heap": 512 << 20, "models": ["pidense"]}}
    assert placement.fits(workload, linux, pi, manifest) is None

    assert edgefleet(home, "keygen").returncode == 0
    line = assert_one_error(edgefleet(home, "bundle", "--board", "rpi-pico-w", "--version", "1", "--models", "pidense",
                                      "-o", str(tmp_path / "b.efb")), EXIT_CONFIG)
    assert "Pi-class boards only" in line
    assert not (tmp_path / "b.efb").exists()


@pytest.mark.parametrize("content", [b"", b"junk\n", "truncated"])
def test_a_corrupt_file_is_one_clear_line(home, tmp_path, content):
    if content == "truncated":
        content = open(os.path.join(DENSE, "model.tflite"), "rb").read()[:3000]
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    line = assert_one_error(edgefleet(home, "model", "add", str(path)), EXIT_CONFIG)
    assert line.startswith("edgefleet: %s: not a valid .tflite model" % path)
    assert user_model_entries(home) == []
    line = assert_one_error(edgefleet(home, "model", "inspect", str(path)), EXIT_CONFIG)
    assert "not a valid .tflite model" in line


def test_inspect_list_and_remove(home):
    proc = edgefleet(home, "model", "inspect", "digits_conv")
    assert proc.returncode == 0, proc.stderr
    assert "MAX_POOL_2D" in proc.stdout and '"mcu_heap_bytes"' in proc.stdout
    proc = edgefleet(home, "model", "inspect", os.path.join(DATA, "dense_relu.tflite"))
    assert proc.returncode == 0 and "MCU engine cannot run it: RELU" in proc.stdout

    assert edgefleet(home, "model", "add", os.path.join(DATA, "dense_relu.tflite"), "--name", "gone",
                     "--pi-only").returncode == 0
    assert "gone" in edgefleet(home, "model", "list").stdout
    line = assert_one_error(edgefleet(home, "model", "remove", "digits_dense"), EXIT_CONFIG)
    assert "bundled" in line
    line = assert_one_error(edgefleet(home, "model", "remove", "nosuch"), EXIT_CONFIG)
    assert "gone" in line   # names the user models there are
    # A model a declared workload runs stays until the workload goes.
    from edgefleet.controller.store import open_registry
    registry = open_registry(str(home / "fleet.db"))
    registry.put_workload({"id": "w-gone", "model": "gone", "rate": 1})
    registry.commit()
    registry.close()
    line = assert_one_error(edgefleet(home, "model", "remove", "gone"), EXIT_CONFIG)
    assert "w-gone" in line
    registry = open_registry(str(home / "fleet.db"))
    registry.remove_workload("w-gone")
    registry.commit()
    registry.close()
    proc = edgefleet(home, "model", "remove", "gone")
    assert proc.returncode == 0, proc.stderr
    assert user_model_entries(home) == []
    assert "gone" not in edgefleet(home, "model", "list").stdout
    assert models.names() == ["digits_conv", "digits_dense"]


def test_committed_test_models_are_what_the_tool_makes():
    sys.path.insert(0, os.path.join(REPO, "tools", "models"))
    try:
        import make_test_models
    finally:
        sys.path.pop(0)
    from edgefleet.firmware.engine import opnames
    for filename, model, changes in (
            ("conv_unsupported.tflite", "digits_conv", {opnames.MAX_POOL_2D: 12, opnames.SOFTMAX: 19}),
            ("dense_relu.tflite", "digits_dense", {opnames.SOFTMAX: 19}),
            ("conv_tanh.tflite", "digits_conv", 4)):
        source = open(os.path.join(models.MODELS_DIR, model, "model.tflite"), "rb").read()
        made = (make_test_models.refuse_activations(source, changes) if isinstance(changes, int)
                else make_test_models.recode(source, changes))
        assert open(os.path.join(DATA, filename), "rb").read() == made != source


def test_a_missing_checker_is_the_command_that_installs_it(home):
    # As on a machine without the test extra: TFLite Micro is what the engine is checked against.
    proc = edgefleet(home, "model", "add", os.path.join(DENSE, "model.tflite"), "--name", "x",
                     prelude="sys.modules['tflite_micro'] = None")
    line = assert_one_error(proc, EXIT_CONFIG)
    assert "tflite-micro" in line and "pip install 'edgefleet[test]'" in line
    assert user_model_entries(home) == []


OPS = os.path.join(DATA, "ops")


def test_a_keras_default_export_and_a_float_io_model_are_added(home):
    # SHAPE, STRIDED_SLICE and PACK are folded at load: every op runs on both board kinds.
    proc = edgefleet(home, "model", "add", os.path.join(OPS, "keras_default.tflite"), "--name", "keras")
    assert proc.returncode == 0, proc.stderr
    table = [row.split() for row in proc.stdout.splitlines()[1:] if row.split()[:1] != ["edgefleet:"]]
    assert [r[1] for r in table] == ["CONV_2D", "MAX_POOL_2D", "SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE",
                                     "FULLY_CONNECTED", "SOFTMAX"]
    assert all(r[2:4] == ["yes", "yes"] for r in table), proc.stdout
    assert "bit-exact with TFLite Micro" in proc.stdout
    manifest = models.manifest("keras")
    assert manifest["mcu_heap_bytes"] > 0 and "SHAPE" in manifest["ops"]

    # Float32 in and out (QUANTIZE in front, DEQUANTIZE behind): samples and vectors stay float.
    proc = edgefleet(home, "model", "add", os.path.join(OPS, "float_io.tflite"), "--name", "floaty")
    assert proc.returncode == 0, proc.stderr
    manifest = models.manifest("floaty")
    assert manifest["samples"]["dtype"] == "float32" and manifest["inputs"][0]["dtype"] == "float32"
    folder = home / "models" / "floaty"
    assert os.path.getsize(folder / "samples.bin") == manifest["samples"]["count"] * 4 * 48
    vectors = json.loads((folder / "vectors.json").read_text())["vectors"]
    assert isinstance(vectors[0]["output"][0], float)

    proc = edgefleet(home, "model", "inspect", os.path.join(OPS, "hard_swish.tflite"))
    assert proc.returncode == 0 and "HARD_SWISH" in proc.stdout and "cannot run" not in proc.stdout


def test_shape_ops_that_cannot_fold_are_all_named(home, tmp_path):
    # The Keras export with SHAPE made RANK: no kernel for RANK, so nothing after it folds.
    sys.path.insert(0, os.path.join(REPO, "tools", "models"))
    try:
        import make_test_models
    finally:
        sys.path.pop(0)
    path = tmp_path / "rank.tflite"
    path.write_bytes(make_test_models.recode(open(os.path.join(OPS, "keras_default.tflite"), "rb").read(), {77: 110}))
    line = assert_one_error(edgefleet(home, "model", "add", str(path)), EXIT_CONFIG)
    for op in ("RANK (op 2", "STRIDED_SLICE (op 3", "PACK (op 4", "RESHAPE (op 5"):
        assert op in line, line
    assert user_model_entries(home) == []
