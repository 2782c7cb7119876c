"""The ARMv8 lane: Pi-class node code on the binaries a Raspberry Pi OS bookworm board runs.

Debian 12 arm64's own python3.11, numpy 1.26.4 and tflite-runtime 2.14 (plus LiteRT where an
aarch64 wheel imports) run here under qemu user-mode emulation (controller/sim/arm64.py). The
inference backends must give bit-identical int8 outputs on aarch64 and on x86; a Pi-class node
agent must join a live broker, announce itself and publish results for its assignment.

Without qemu and without root to install it the lane skips, loudly; with CI set it fails instead.
"""
import importlib.util
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from edgefleet import models as models_pkg
from edgefleet.controller.sim.arm64 import Arm64Unavailable, ensure_runtime

pytestmark = pytest.mark.arm64

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_VECTORS = os.path.join(REPO, "tools", "arm64", "run_vectors.py")
MODELS = models_pkg.names()
BACKENDS = ("tflite", "litert")


def _say(request, line):
    """Print past pytest's capture: timings here are results the lane reports."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n[arm64] " + line, flush=True)


def _load_run_vectors():
    spec = importlib.util.spec_from_file_location("edgefleet_arm64_run_vectors", RUN_VECTORS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_vectors


@pytest.fixture(scope="session")
def arm64(request):
    started = time.monotonic()
    try:
        runtime = ensure_runtime()
    except Arm64Unavailable as e:
        reason = "ARM64 LANE NOT RUN: qemu user-mode emulation is unavailable: %s" % e
        if os.environ.get("CI"):
            pytest.fail(reason)
        _say(request, "!" * 20 + " " + reason)
        pytest.skip(reason)
    info = runtime.info
    _say(request, "ensure_runtime() took %.1f s (recipe %s; its build took %s s, %.1f MB downloaded; "
         "optional wheels left out: %s)" % (time.monotonic() - started, info["recipe"], info["build_seconds"],
                                             info["download_bytes"] / 1e6, info["optional_skipped"] or "none"))
    return runtime


@pytest.fixture(scope="session")
def arm64_backends(arm64):
    proc = arm64.run_python(["-c", "from edgefleet.firmware.backends import available; print(' '.join(available()))"])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_interpreter_is_aarch64_python311(arm64):
    proc = arm64.run_python(["-c", "import json, platform, sys; "
                                   "print(json.dumps([platform.machine(), list(sys.version_info[:2]), sys.version]))"])
    assert proc.returncode == 0, proc.stderr
    machine, version, banner = json.loads(proc.stdout)
    assert machine == "aarch64"
    assert version == [3, 11], banner


def test_node_modules_import_on_aarch64(arm64, arm64_backends):
    """Everything a Pi-class node imports, and nothing of the controller's host dependencies."""
    proc = arm64.run_python(["-c", "import sys; import edgefleet.firmware.node, edgefleet.firmware.procworker, "
                                   "edgefleet.boards.hal_linux, edgefleet.boards.hal_sim; "
                                   "print('paho' in sys.modules)"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False"]
    assert "tflite" in arm64_backends


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", MODELS)
def test_backend_outputs_match_x86_bit_for_bit(request, arm64, arm64_backends, model, backend):
    if backend not in arm64_backends:
        # Only LiteRT is optional, and only where its aarch64 wheel is missing or fails to import.
        pytest.skip("%s is not installed on the aarch64 side: %s" % (backend, arm64.info["optional_skipped"]))
    model_dir = os.path.join(models_pkg.MODELS_DIR, model)
    with open(os.path.join(model_dir, "vectors.json")) as f:
        vectors = json.load(f)
    proc = arm64.run_python([RUN_VECTORS, model_dir, backend])
    assert proc.returncode == 0, proc.stderr
    on_arm = json.loads(proc.stdout)
    on_x86 = _load_run_vectors()(model_dir, backend)
    reference = [v["output"] for v in vectors["vectors"]]
    reference_mismatches = [i for i, (got, want) in enumerate(zip(on_arm["outputs"], reference)) if got != want]
    _say(request, "%s/%s: %d vectors, per inference %.1f us emulated aarch64 vs %.1f us x86; "
         "aarch64 == x86: %s; aarch64 == %s reference: %s" % (
             model, backend, len(reference), on_arm["us_per_inference"], on_x86["us_per_inference"],
             on_arm["outputs"] == on_x86["outputs"], vectors["reference"],
             "yes" if not reference_mismatches else "NO, vectors %s differ" % reference_mismatches))
    assert on_arm["machine"] == "aarch64"
    assert on_arm["backend"] == backend
    assert len(on_arm["outputs"]) == len(reference)
    assert on_arm["outputs"] == on_x86["outputs"]
    assert not reference_mismatches, "%s/%s on aarch64 disagrees with %s on vectors %s" % (
        model, backend, vectors["reference"], reference_mismatches)


class _Collector:
    """paho subscriber that keeps every message of one node, decoded."""

    def __init__(self, host, port, topic):
        import paho.mqtt.client as mqtt
        self.messages = []
        self._cond = threading.Condition()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="arm64-test-observer")
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()

    def _on_message(self, client, userdata, msg):
        if not msg.payload:
            return  # a retained message being cleared, ours included
        with self._cond:
            self.messages.append((msg.topic, json.loads(msg.payload)))
            self._cond.notify_all()

    def publish(self, topic, payload, retain=False):
        self._client.publish(topic, json.dumps(payload), qos=1, retain=retain).wait_for_publish(10)

    def clear_retained(self, topic):
        self._client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)

    def wait_for(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self.messages if predicate(*m)]
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)

    def close(self):
        self._client.loop_stop()
        self._client.disconnect()


def test_aarch64_node_joins_a_live_broker(request, arm64, mosquitto, tmp_path):
    """A Pi-class node agent on the aarch64 binaries: hello on connect, then results for a
    retained assignment, each from an isolated inference process (itself started under qemu)."""
    from edgefleet.boards import catalog
    from edgefleet.controller.install import image

    node_id = "arm64-rpi4"
    flash = str(tmp_path / "rpi4")
    cfg = image.node_config(node_id, catalog.load("rpi4"), mosquitto.host, mosquitto.port, simulated=False)
    image.write_image(flash, cfg, model_names=["digits_dense"], mpy_arch=None)
    observer = _Collector(mosquitto.host, mosquitto.port, "ef/node/%s/#" % node_id)
    assign_topic = "ef/node/%s/assign" % node_id
    # Retained before the node exists: the broker must hand it over on the node's subscribe.
    observer.publish(assign_topic, {"v": 1, "epoch": 1, "wl": [
        {"id": "digits", "model": "digits_dense", "rate": 20, "input": {"kind": "samples"}}]}, retain=True)
    log_path = os.path.join(flash, "node.log")
    log = open(log_path, "wb")
    started = time.monotonic()
    proc = subprocess.Popen(arm64.node_command("config.json"), cwd=flash, env=arm64.env(),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        hello = observer.wait_for(lambda t, m: t.endswith("/hello"), 120)
        assert hello, "no hello from the aarch64 node:\n" + open(log_path, errors="replace").read()
        hello_s = time.monotonic() - started
        body = hello[0][1]
        assert body["node"] == node_id and body["board"] == "rpi4" and body["runtime"] == "cpython"
        assert "tflite" in body["caps"]["backends"] and "digits_dense" in body["caps"]["models"]
        results = observer.wait_for(lambda t, m: t.endswith("/result") and m.get("seq", 0) >= 5, 120)
        assert results, "no results from the aarch64 node:\n" + open(log_path, errors="replace").read()
        results = [m for t, m in observer.messages if t.endswith("/result")]
        assert [m["seq"] for m in results][:5] == [1, 2, 3, 4, 5]
        assert all(m["wl"] == "digits" and m["node"] == node_id for m in results)
        correct = sum(1 for m in results if m.get("truth") == m["label"])
        _say(request, "aarch64 node: hello after %.1f s, %d results in %.1f s, %d/%d labels right, "
             "us per inference reported %s" % (hello_s, len(results), time.monotonic() - started, correct,
                                                len(results), sorted(m["us"] for m in results)[len(results) // 2]))
        assert proc.poll() is None, "the node exited:\n" + open(log_path, errors="replace").read()
    finally:
        # SIGINT: the agent unwinds through asyncio.run and closes its inference processes itself
        # (SIGTERM would orphan them to an init that may never reap them).
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        # The broker is the session's: the next test must not inherit this node's assignment.
        observer.clear_retained(assign_topic)
        observer.close()


def test_aarch64_node_serves_next_to_x86_nodes_with_identical_results(request, arm64, mosquitto, tmp_path):
    """In one fleet under the real controller: an x86 Pi-class node and an aarch64 one run the
    same workload on the same held-out inputs; every input both classified gets the same label
    and the same dequantized score from both."""
    from edgefleet.controller.fleet.service import ControllerService
    from edgefleet.controller.sim.simfleet import SimFleet

    layout = [("pi-x86", "rpi4"), ("pi-arm", "rpi4", "arm64")]
    workloads = [{"id": "same", "model": "digits_conv", "rate": 20.0, "replicas": 2, "input": {"kind": "samples"}}]
    controller = ControllerService(mosquitto.host, mosquitto.port, db_path=str(tmp_path / "fleet.db"),
                                   manifests=models_pkg.manifests(), workloads=workloads).start()
    fleet = SimFleet(str(tmp_path / "fleet"), mosquitto.host, mosquitto.port, layout, keepalive=5).start()
    observer = _Collector(mosquitto.host, mosquitto.port, "ef/node/+/result")
    try:
        def both_served_30():
            seen = {}
            for topic, msg in observer.messages:
                seen.setdefault(msg["node"], set()).add(msg["in"])
            common = seen.get("pi-x86", set()) & seen.get("pi-arm", set())
            return len(common) >= 30 and common

        common = observer.wait_for(lambda t, m: both_served_30(), 180)
        assert common, "both nodes did not serve: %s" % controller.snapshot()
        by_node = {}
        for topic, msg in observer.messages:
            by_node.setdefault(msg["node"], {})[msg["in"]] = (msg["label"], msg["score"])
        shared = sorted(set(by_node["pi-x86"]) & set(by_node["pi-arm"]))
        assert [by_node["pi-x86"][i] for i in shared] == [by_node["pi-arm"][i] for i in shared]
        snap = controller.snapshot()
        assert {n["id"]: n["state"] for n in snap["nodes"]} == {"pi-x86": "online", "pi-arm": "online"}
        _say(request, "aarch64 and x86 nodes agree on %d shared inputs" % len(shared))
    finally:
        observer.close()
        fleet.stop()
        controller.stop()
