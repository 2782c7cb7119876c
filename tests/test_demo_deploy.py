"""`edgefleet deploy` on a fleet set up the demo's way (controller/sim/demo.py: demo_fleet, the
demo's layout and workloads): bundles built with `edgefleet bundle --simulated` for a MicroPython
board and a Pi-class board install through the CLI, and `status` shows every node's new version
and slot. Real mosquitto, the real MicroPython unix port, CPython nodes."""
import json
import os
import subprocess
import sys

import pytest

from edgefleet import models
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.install import image
from edgefleet.controller.sim.demo import demo_fleet, demo_workloads
from edgefleet.controller.sim.simfleet import demo_layout
from support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.micropython]


def cli(home, *args):
    env = dict(os.environ, EDGEFLEET_HOME=home)
    return subprocess.run([sys.executable, "-m", "edgefleet.controller.cli"] + list(args), capture_output=True,
                          text=True, timeout=180, env=env)


def status(home, db):
    proc = cli(home, "status", "--db", db, "--json")
    assert proc.returncode == 0, proc.stderr
    return {n["id"]: n for n in json.loads(proc.stdout)["nodes"]}


def test_deploy_to_a_demo_fleet_through_the_cli(mosquitto, tmp_path, monkeypatch):
    home = str(tmp_path / "home")
    monkeypatch.setenv("EDGEFLEET_HOME", home)   # the demo's fleet takes this host's signing key
    layout = demo_layout(2)   # a Pico W and a Raspberry Pi 4, as the demo starts them
    runtimes = {"mcu-picow-1": "micropython", "pi-rpi4-1": "cpython"}
    assert [node for node, _ in layout] == list(runtimes)
    db = str(tmp_path / "fleet.db")
    fleet = demo_fleet(str(tmp_path / "fleet"), mosquitto.host, mosquitto.port, layout, keepalive=2)
    controller = ControllerService(mosquitto.host, mosquitto.port, db_path=db, manifests=models.manifests(),
                                   workloads=demo_workloads(layout, runtimes, models.names())).start()
    try:
        fleet.start()
        wait_until(lambda: (lambda s: len(s) == 2 and all(n["results"] > 0 for n in s.values()))(status(home, db)),
                   90, "both demo nodes delivering")
        before = status(home, db)
        assert {(n["fw"], n["slot"]) for n in before.values()} == {(image.firmware_version(), "slot_a")}
        table = cli(home, "status", "--db", db)
        assert table.returncode == 0 and "VERSION" in table.stdout and "SLOT" in table.stdout, table.stdout

        broker = "%s:%d" % (mosquitto.host, mosquitto.port)
        for board, arch in (("rpi-pico-w", "x64"), ("rpi4", "none")):
            path = str(tmp_path / (board + ".efb"))
            proc = cli(home, "bundle", "--board", board, "--version", "9.9", "--arch", arch, "--simulated", "-o", path)
            assert proc.returncode == 0, proc.stderr
            proc = cli(home, "deploy", path, "--to", board, "--db", db, "--broker", broker, "--soak", "1",
                       "--window", "30", "--quiet")
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "9.9 healthy on 1 node(s)" in proc.stdout, proc.stdout + proc.stderr

        after = wait_until(lambda: (lambda s: s if all((n["fw"], n["slot"]) == ("9.9", "slot_b") for n in s.values())
                                    else None)(status(home, db)), 30, "every node on 9.9 in slot_b")
        assert set(after) == set(runtimes)
        table = cli(home, "status", "--db", db).stdout
        for node in runtimes:
            row = [line for line in table.splitlines() if line.startswith(node + " ")][0]
            assert " 9.9 " in row and " slot_b " in row, table
    finally:
        fleet.stop()
        controller.stop()
