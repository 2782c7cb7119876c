"""Inference workers: Pi-class workers isolated in their own process on both interpreter
backends, surviving native crashes; bad models reported clearly while the node keeps serving
its other workloads, on CPython and MicroPython nodes."""
import asyncio
import json
import os
import signal

import numpy as np
import pytest

from edgefleet import models
from edgefleet.firmware import backends
from edgefleet.firmware.procworker import ProcessModel, WorkerProcessError
from edgefleet.controller.sim.nodeprobe import NodeProbe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAD_MODELS = os.path.join(REPO, "tests", "vectors", "models")
INTERPRETER_BACKENDS = [b for b in ("litert", "tflite") if b in backends.available()]


def test_both_interpreter_backends_are_installed():
    # The Pi-class lane must exercise LiteRT and tflite-runtime; a missing one is a setup bug.
    assert INTERPRETER_BACKENDS == ["litert", "tflite"]


def _vectors(name):
    with open(os.path.join(models.MODELS_DIR, name, "vectors.json")) as f:
        return json.load(f)


def _vector_inputs(vectors):
    cases = vectors["vectors"] if isinstance(vectors, dict) else vectors
    return [bytes(np.array(c["input"], dtype=np.int8).tobytes()) for c in cases]


@pytest.mark.parametrize("backend", INTERPRETER_BACKENDS)
@pytest.mark.parametrize("model", ["digits_dense", "digits_conv"])
def test_isolated_worker_matches_the_in_process_interpreter(model, backend):
    path = os.path.join(models.MODELS_DIR, model, "model.tflite")
    inputs = _vector_inputs(_vectors(model))
    _, local = backends.open_model(path, backend)
    expected = b"".join(np.array(local.invoke(x), dtype=np.int8).tobytes() for x in inputs)

    async def run():
        proc = await ProcessModel(path, backend, num_threads=2).start()
        try:
            assert proc.backend_name == backend and proc.pid != os.getpid()
            outputs, latencies = await proc.invoke_batch(b"".join(inputs), len(inputs))
            one, _ = await proc.invoke_batch(inputs[3], 1)
        finally:
            await proc.close()
        return outputs, latencies, one

    outputs, latencies, one = asyncio.run(run())
    assert outputs == expected
    assert one == expected[3 * len(one):4 * len(one)]
    assert len(latencies) == len(inputs) and all(us >= 0 for us in latencies)


@pytest.mark.parametrize("signum", [signal.SIGSEGV, signal.SIGKILL])
def test_a_killed_inference_process_raises_a_typed_error(signum):
    path = os.path.join(models.MODELS_DIR, "digits_dense", "model.tflite")

    async def run():
        proc = await ProcessModel(path, INTERPRETER_BACKENDS[0]).start()
        os.kill(proc.pid, signum)
        with pytest.raises(WorkerProcessError) as info:
            for _ in range(50):
                await proc.invoke_batch(bytes(64), 1)
                await asyncio.sleep(0.02)
        return info.value

    error = asyncio.run(run())
    assert error.returncode == -signum


def test_a_bad_model_fails_to_start_with_the_reason():
    async def run():
        with pytest.raises(WorkerProcessError, match="cannot load"):
            await ProcessModel(os.path.join(BAD_MODELS, "missing.tflite"), "engine").start()
        with pytest.raises(WorkerProcessError, match="GELU"):
            await ProcessModel(os.path.join(BAD_MODELS, "unsupported_op.tflite"), "engine").start()

    asyncio.run(run())


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _truncated_model(tmp_path):
    src = os.path.join(models.MODELS_DIR, "digits_dense", "model.tflite")
    with open(src, "rb") as f:
        data = f.read()
    path = tmp_path / "truncated.tflite"
    path.write_bytes(data[: len(data) // 3])
    return str(path)


def _bad_model_files(tmp_path):
    """Two broken models on the board's flash, each with the dense model's inputs."""
    dense = os.path.join(models.MODELS_DIR, "digits_dense")
    files = {}
    for name, tflite in (("shortened", _truncated_model(tmp_path)),
                         ("unsupported", os.path.join(BAD_MODELS, "unsupported_op.tflite"))):
        files["models/%s/model.tflite" % name] = tflite
        files["models/%s/samples.bin" % name] = os.path.join(dense, "samples.bin")
    return files


WORKLOADS = [
    {"id": "good", "model": "digits_dense", "rate": 20, "input": {"kind": "samples"}},
    {"id": "cut", "model": "shortened", "rate": 5, "input": {"kind": "samples"}},
    {"id": "gelu", "model": "unsupported", "rate": 5, "input": {"kind": "samples"}},
]


@pytest.mark.e2e
@pytest.mark.parametrize("board", ["rpi4", pytest.param("rpi-pico-w", marks=pytest.mark.micropython)])
def test_bad_models_are_reported_and_the_good_workload_keeps_running(board, mosquitto, tmp_path):
    # LiteRT runs GELU, so on a Pi-class node only the truncated file is bad; the MCU engine
    # also refuses the GELU model, naming the op.
    mcu = board == "rpi-pico-w"
    expect_failed = {"cut", "gelu"} if mcu else {"cut"}

    def failures(p):
        found = {e["data"]["wl"]: e["msg"] for e in p.of_kind("event") if e["kind"] == "workload_failed"}
        return found if set(found) == expect_failed else None

    with NodeProbe(mosquitto, str(tmp_path), "bad-models", board, extra_files=_bad_model_files(tmp_path)).start(WORKLOADS) as probe:
        by_wl = probe.wait_for(failures, 30)
        assert by_wl, probe.of_kind("event")
        if mcu:
            assert "GELU" in by_wl["gelu"] and "UnsupportedOp" in by_wl["gelu"], by_wl
            assert "MalformedModel" in by_wl["cut"] and "offset" in by_wl["cut"], by_wl
        else:
            assert "not a valid Flatbuffer" in by_wl["cut"], by_wl
        before = len(probe.of_kind("result"))
        assert probe.wait_for(lambda p: len(p.of_kind("result")) >= before + 10, 20)
        assert "good" in {r["wl"] for r in probe.of_kind("result")}
        assert "cut" not in {r["wl"] for r in probe.of_kind("result")}
        hb = probe.wait_for(lambda p: p.of_kind("hb") and p.of_kind("hb")[-1], 5)
        states = {w["id"]: w["state"] for w in hb["wl"]}
        assert states["good"] == "running" and all(states[w] == "failed" for w in expect_failed), states


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGSEGV, signal.SIGKILL])
def test_killing_a_pi_worker_process_does_not_take_the_node_down(signum, mosquitto, tmp_path):
    workloads = [{"id": "w", "model": "digits_conv", "rate": 20, "input": {"kind": "samples"}}]
    with NodeProbe(mosquitto, str(tmp_path), "crashy", "rpi4").start(workloads) as probe:
        assert probe.wait_for(lambda p: len(p.of_kind("result")) >= 5, 30)
        agent = probe.board.pid
        (worker,) = probe.wait_for(lambda p: _children(agent), 10)
        os.kill(worker, signum)
        crashed = probe.wait_for(lambda p: [e for e in p.of_kind("event") if e["kind"] == "crash"], 10)
        assert crashed and "exited" in crashed[0]["msg"] and crashed[0]["data"]["child"] == "w"
        before = len(probe.of_kind("result"))
        assert probe.wait_for(lambda p: len(p.of_kind("result")) >= before + 10, 20), "no results after the crash"
        assert probe.board.pid == agent and probe.board.boots == 1, "the node agent itself restarted"
        new_children = _children(agent)
        assert new_children and worker not in new_children
        seqs = [r["seq"] for r in probe.of_kind("result")]
        assert seqs == list(range(1, len(seqs) + 1)), "results lost or repeated across the restart"
