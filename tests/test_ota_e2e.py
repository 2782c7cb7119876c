"""Updates end to end: real MicroPython and CPython nodes booted from A/B slot images, a real
mosquitto, the controller placing workloads, and rollouts driven over MQTT.

One fleet serves the module, and the tests build on each other in order: a good version goes
to every node; a tampered bundle is refused; a version whose model cannot load fails its
health window on the canary, which reverts by itself, and the rollout stops before the second
node; the `edgefleet rollback` command takes a node back to its previous slot."""
import json
import os
import subprocess
import sys
import time

import pytest

from edgefleet import models
from edgefleet.controller.deploy import bundle
from edgefleet.controller.install import image, keys
from edgefleet.controller.security.files import write_private
from edgefleet.controller.deploy.deployer import Deployer
from edgefleet.controller.store import open_registry
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.simfleet import SimFleet
from support.rollouts import Interrupted, run_rollout
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

KEY = bytes(range(32))
LAYOUT = [("mcu-a", "rpi-pico-w"), ("mcu-b", "rpi-pico-w"), ("pi-a", "rpi4")]
WORKLOADS = [
    {"id": "dense-mcu", "model": "digits_dense", "rate": 5.0, "replicas": 2, "input": {"kind": "samples"},
     "constraints": {"runtime": "micropython"}},
    {"id": "dense-pi", "model": "digits_dense", "rate": 10.0, "replicas": 1, "input": {"kind": "samples"},
     "constraints": {"runtime": "cpython"}},
]


class Fleet:
    def __init__(self, broker, root):
        self.broker, self.root = broker, root
        self.db = os.path.join(root, "fleet.db")
        # The controller host's home: its signing key and the bundle sequence counter, shared by
        # the CLI and the bundles built in-process here, so sequence numbers only rise.
        self.home = os.path.join(root, "home")
        write_private(os.path.join(self.home, keys.HOST_FILE), KEY.hex() + "\n")
        self.sim = SimFleet(os.path.join(root, "fleet"), broker.host, broker.port, LAYOUT, keepalive=2, slotted=True,
                            key=KEY, config={"ota_abandon_ms": 3000})
        self.controller = ControllerService(broker.host, broker.port, db_path=self.db, manifests=models.manifests(),
                                            workloads=WORKLOADS)

    def pointer(self, node):
        with open(os.path.join(self.sim.flash_dir(node), "slots.json")) as f:
            return json.load(f)

    def results(self):
        return {n["id"]: n["results"] for n in self.controller.snapshot()["nodes"]}

    def fw(self, node):
        registry = open_registry(self.db)
        try:
            return registry.node(node)["fw"]
        finally:
            registry.close()

    def deliver_more(self, nodes, timeout=30):
        before = self.results()
        wait_until(lambda: all(self.results()[n] > before[n] for n in nodes), timeout, "results from %s" % nodes)

    def deploy(self, data, nodes, version, window_ms=15000, stop_at=None, **kwargs):
        """Run a rollout; stop_at (a fraction of the bytes) disconnects the deployer mid-stream."""
        def watch(progress):
            if stop_at is not None and progress["bytes"] >= stop_at * progress["bytes_total"]:
                raise Interrupted(progress["bytes"])

        return run_rollout(self.broker, data, nodes, version, window_ms=window_ms, wave_timeout_s=60, timeout_s=120,
                           on_progress=watch, **kwargs)

    def cli(self, *args, home=None):
        env = dict(os.environ, EDGEFLEET_HOME=home or self.home)
        return subprocess.run([sys.executable, "-m", "edgefleet.controller.cli"] + list(args), capture_output=True,
                              text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def fleet(mosquitto, tmp_path_factory):
    f = Fleet(mosquitto, str(tmp_path_factory.mktemp("ota")))
    home = pytest.MonkeyPatch()
    home.setenv("EDGEFLEET_HOME", f.home)
    f.controller.start()
    f.sim.start()
    try:
        wait_until(lambda: (f.controller.snapshot() and len(f.controller.snapshot()["nodes"]) == 3
                            and all(v >= 2 for v in f.results().values())), 60, "three nodes delivering")
        yield f
    finally:
        f.sim.stop()
        f.controller.stop()
        home.undo()


def test_ota_of_micropython_and_cpython_nodes(fleet, tmp_path):
    assert {n: fleet.pointer(n)["active"] for n, _ in LAYOUT} == {"mcu-a": "slot_a", "mcu-b": "slot_a", "pi-a": "slot_a"}
    # The MicroPython boards through the CLI: bundle, then deploy to the board's group, which
    # the registry resolves (canary mcu-a, then mcu-b).
    path = os.path.join(str(tmp_path), "mcu.efb")
    proc = fleet.cli("bundle", "--board", "rpi-pico-w", "--version", "0.2.0", "--arch", "x64", "--models", "digits_dense",
                     "-o", path)
    assert proc.returncode == 0, proc.stderr
    proc = fleet.cli("deploy", path, "--to", "rpi-pico-w", "--db", fleet.db, "--broker", "%s:%d" % (
        fleet.broker.host, fleet.broker.port), "--soak", "1", "--batch", "1", "--window", "15")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0.2.0 healthy on 2 node(s)" in proc.stdout and "wave 2/2" in proc.stderr, proc.stdout + proc.stderr
    pi = bundle.build("rpi4", "0.2.0", KEY, models=["digits_dense"], simulated=True)
    rollout = fleet.deploy(pi, ["pi-a"], "0.2.0")
    assert rollout.status == "done", (rollout.error, rollout.log)
    for node, _ in LAYOUT:
        pointer = fleet.pointer(node)
        assert pointer["active"] == "slot_b" and pointer["prev"] == "slot_a" and not pointer["tentative"], pointer
        assert pointer["ver"]["slot_b"] == "0.2.0"
        assert fleet.fw(node) == "0.2.0"   # the hello after the reboot reports the slot's version
    # The Linux node's code now runs from its slot: its inference child was started from there.
    pi_flash = os.path.realpath(fleet.sim.flash_dir("pi-a"))
    board = fleet.sim.board("pi-a")
    children = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(board.pid)], capture_output=True,
                              text=True).stdout.splitlines()
    child = [line.split()[0] for line in children if "firmware.inference_child" in line]
    assert child, children
    with open("/proc/%s/environ" % child[0], "rb") as f:
        environ = f.read().split(b"\0")
    assert any(e.startswith(b"PYTHONPATH=" + os.path.join(pi_flash, "slot_b").encode()) for e in environ), environ
    fleet.deliver_more(["mcu-a", "mcu-b", "pi-a"])


def test_tampered_bundle_is_refused_and_the_node_keeps_running(fleet):
    forged = bundle.build("rpi-pico-w", "6.6.6", bytes(32), models=["digits_dense"], mpy_arch="x64")
    before = fleet.pointer("mcu-a")
    rollout = fleet.deploy(forged, ["mcu-a"], "6.6.6")
    assert rollout.status == "failed" and "rejected" in rollout.error and "signature" in rollout.error, rollout.error
    assert fleet.pointer("mcu-a") == before
    fleet.deliver_more(["mcu-a"])


def _bad_model_bundle(tmp_path, version):
    """A correctly signed bundle whose model file is garbage: installs fine, cannot infer."""
    slot = str(tmp_path / "bad-slot")
    profile = {"name": "rpi-pico-w", "runtime": "micropython", "fs_bytes": 1 << 20}
    rels = image.write_slot(slot, profile, ["digits_dense"], image.SIM_MPY_ARCH, simulated=True)
    with open(os.path.join(slot, "models/digits_dense/model.tflite"), "wb") as f:
        f.write(b"this is not a tflite flatbuffer" * 40)
    manifest = bundle.manifest_for(slot, rels, profile, version, image.SIM_MPY_ARCH, bundle.next_seq())
    return bundle.pack(manifest, slot, KEY)


def test_bad_version_reverts_by_itself_and_the_canary_stops_the_rollout(fleet, tmp_path):
    bad = _bad_model_bundle(tmp_path, "0.3.0-bad")
    before_b = fleet.pointer("mcu-b")
    started = time.monotonic()
    rollout = fleet.deploy(bad, ["mcu-a", "mcu-b"], "0.3.0-bad", window_ms=5000, canary=1)
    assert rollout.status == "failed" and "wave 1/2" in rollout.error and "reverted" in rollout.error, rollout.error
    assert "not healthy within 5000 ms" in rollout.error
    assert set(rollout.transfers) == {"mcu-a"}, "the rollout stopped before the second wave"
    assert fleet.pointer("mcu-b") == before_b
    pointer = wait_until(lambda: not fleet.pointer("mcu-a")["reverted"] and fleet.pointer("mcu-a"), 10,
                         "mcu-a reported its revert")
    assert pointer["active"] == "slot_b" and pointer["ver"]["slot_b"] == "0.2.0" and pointer["prev"] is None
    assert time.monotonic() - started < 60
    fleet.deliver_more(["mcu-a"])
    assert fleet.fw("mcu-a") == "0.2.0"


def test_a_stream_resumes_after_the_deployer_drops_and_a_stalled_one_is_abandoned(fleet):
    update = bundle.build("rpi-pico-w", "0.2.1", KEY, models=["digits_dense"], mpy_arch="x64")
    first = fleet.deploy(update, ["mcu-b"], "0.2.1", stop_at=0.3)
    held = first.transfers["mcu-b"].acked
    assert first.status == "running" and 0 < held < len(update)
    # A new deployer (a restarted controller) asks where the node is and goes on from there.
    second = fleet.deploy(update, ["mcu-b"], "0.2.1")
    assert second.status == "done", (second.error, second.log)
    assert second.transfers["mcu-b"].bytes_sent <= len(update) - held + 6 * 1536, "resumed, not restarted"
    assert fleet.pointer("mcu-b")["ver"][fleet.pointer("mcu-b")["active"]] == "0.2.1"
    # An older bundle, validly signed (a replay or a downgrade), is refused and changes nothing.
    old = bundle.build("rpi-pico-w", "0.1.9", KEY, models=["digits_dense"], mpy_arch="x64", seq=5)
    before = fleet.pointer("mcu-b")
    replay = fleet.deploy(old, ["mcu-b"], "0.1.9")
    assert replay.status == "failed" and "sequence 5" in replay.error, replay.error
    assert fleet.pointer("mcu-b") == before
    # A stream nobody finishes is dropped by the node after ota_abandon_ms, cleanly.
    stalled = bundle.build("rpi-pico-w", "0.2.2", KEY, models=["digits_dense"], mpy_arch="x64")
    assert fleet.deploy(stalled, ["mcu-b"], "0.2.2", stop_at=0.3).status == "running"
    with Deployer(fleet.broker.host, fleet.broker.port) as deployer:
        def abandoned():
            return any(kind == "ota_state" and msg["state"] == "abandoned" for _, kind, msg in deployer.messages(0.5))
        wait_until(abandoned, 10, "mcu-b abandoning the stalled stream")
    pointer = fleet.pointer("mcu-b")
    assert pointer["ver"][pointer["active"]] == "0.2.1" and not pointer["tentative"]
    fleet.deliver_more(["mcu-b"])


def test_rollback_command_returns_a_node_to_its_previous_slot(fleet, tmp_path):
    env = dict(os.environ, EDGEFLEET_HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "edgefleet.controller.cli", "rollback", "--to", "pi-a",
                           "--broker", "%s:%d" % (fleet.broker.host, fleet.broker.port), "--timeout", "60"],
                          capture_output=True, text=True, timeout=90, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "pi-a -> 0.1.0" in proc.stdout, proc.stdout
    pointer = fleet.pointer("pi-a")
    assert pointer["active"] == "slot_a" and pointer["prev"] == "slot_b" and not pointer["tentative"]
    wait_until(lambda: fleet.fw("pi-a") == "0.1.0", 10, "pi-a reports 0.1.0")
    fleet.deliver_more(["pi-a"])
