"""A user's whole journey, through `edgefleet` commands only, on a small simulated LAN.

The LAN (tests/support/netns.py: Lan) is a bridge on this host, where the broker listens, and
one network namespace per machine: the controller host, the operator's laptop, a Pi-class board
(a real OpenSSH server that `provision` installs the node through) and two MicroPython boards
(the real unix-port interpreter held to the Pico W's heap, flashed over their serial links, as a
board on USB is). No process here reaches another over loopback except the serial links.

The steps are the README's walkthrough, in the order a user takes them: the fleet's keys → the
broker → the controller → flash → provision → an operator's machine joins → apply a fleet file →
results arrive → deploy v2 (canary, then the rest) → every node reports v2 → rollback → a
board's power is cut and comes back → drain a node → its work moves. After every step, `status`
from the operator's machine is checked against what is true.
"""
import json
import os
import shlex
import subprocess
import sys
import time

import pytest

from edgefleet.boards import catalog
from edgefleet.controller.netutil import free_port
from edgefleet.controller.sim.simboard import LinuxBoard, McuBoard
from edgefleet.controller.sim.simfleet import simulated_heap_bytes
from support.netns import Lan
from support.sshd import Sshd, sshd_available
from support.venvcopy import copy_venv
from support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.micropython, pytest.mark.timeout(900)]

MCUS = ("mcu-1", "mcu-2")
PI = "pi-1"
FLEET = """
[[workload]]
id = "digits"
model = "digits_dense"
rate = 4.0
replicas = 2
input = { kind = "samples" }

[[workload]]
id = "digits-pi"
model = "digits_conv"
rate = 4.0
replicas = 1
input = { kind = "samples" }
constraints = { runtime = "cpython" }
"""


class Machine:
    """One machine of the LAN: its namespace (None: this host) and its own edgefleet home and
    config folder, as a separate computer has."""

    def __init__(self, lan, name, base):
        self.lan, self.name = lan, name
        self.env = dict(os.environ, EDGEFLEET_HOME=os.path.join(base, name, "home"),
                        XDG_CONFIG_HOME=os.path.join(base, name, "config"), XDG_STATE_HOME=os.path.join(base, name, "state"))
        self.env.pop("EDGEFLEET_BROKER", None)
        self.logs = os.path.join(base, name)
        os.makedirs(self.logs, exist_ok=True)

    def argv(self, argv):
        argv = [sys.executable, "-m", "edgefleet.controller.cli"] + list(argv)
        return self.lan.exec_argv(self.name, argv) if self.name in self.lan.machines else argv

    def cli(self, *argv, ok=True, timeout=240):
        proc = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout, env=self.env)
        if ok:
            assert proc.returncode == 0, (self.name, argv, proc.stdout[-3000:], proc.stderr[-3000:])
        return proc

    def spawn(self, *argv):
        log = open(os.path.join(self.logs, "%s.log" % argv[0]), "wb")
        return subprocess.Popen(self.argv(argv), env=self.env, stdout=log, stderr=subprocess.STDOUT)


def unit_exec_start(root):
    """ExecStart and WorkingDirectory of the systemd unit `provision` installed under root."""
    fields = {}
    with open(os.path.join(root, "etc", "systemd", "system", "edgefleet-node.service")) as f:
        for line in f:
            name, sep, value = line.strip().partition("=")
            if sep:
                fields[name] = value
    return shlex.split(fields["ExecStart"]), fields["WorkingDirectory"]


def test_a_users_fleet_from_keys_to_drain_on_a_lan(tmp_path):
    if not sshd_available():
        pytest.fail("OpenSSH's server is not installed; `make test` installs it")
    base = str(tmp_path)
    procs, boards = [], []
    with Lan("life", ["ctrl", "ops", "pi"] + list(MCUS)) as lan:
        admin = Machine(lan, "admin", base)         # this host: the broker, and the boards' USB cables
        ctrl = Machine(lan, "ctrl", base)
        ctrl.env = dict(admin.env)                  # the controller runs from the admin's fleet files
        ops = Machine(lan, "ops", base)
        port = free_port(lan.host_ip)
        broker_url = "mqtts://%s:%d" % (lan.host_ip, port)

        def status():
            return json.loads(ops.cli("status", "--json").stdout)

        def nodes():
            return {n["id"]: n for n in status()["nodes"]}

        sshd = None
        try:
            # 1. The fleet's keys, and where its broker is.
            admin.cli("init", "--broker-host", lan.host_ip)
            os.makedirs(os.path.join(admin.env["XDG_CONFIG_HOME"], "edgefleet"))
            with open(os.path.join(admin.env["XDG_CONFIG_HOME"], "edgefleet", "config.toml"), "w") as f:
                f.write('broker = "%s"\n' % broker_url)

            # 2. The broker on the LAN address, 3. the controller on its own machine.
            procs.append(admin.spawn("broker", "--bind", lan.host_ip, "--port", str(port)))
            procs.append(ctrl.spawn("controller", "--db", os.path.join(base, "fleet.db")))

            # The operator's laptop joins with a kit from the fleet host: the CA, the operator's
            # login, the signing key's public half and the broker's URL; nothing else.
            kit = os.path.join(base, "operator.kit")
            admin.cli("operator-kit", "-o", kit)
            ops.cli("join", kit)
            wait_until(lambda: ops.cli("status", "--json", ok=False).returncode == 0, 30, "the controller answering")
            assert status()["nodes"] == []

            # 4. Two Pico Ws on USB, each on the LAN's Wi-Fi.
            heap = simulated_heap_bytes(catalog.load("rpi-pico-w"))
            for node in MCUS:
                flash = os.path.join(base, node)
                os.makedirs(flash)
                board = McuBoard(node, flash, heap, console_log=os.path.join(base, node + ".console"), netns=lan.ns(node))
                boards.append(board)
                board.start()
                assert board.wait_console(b">>> ", timeout=10)
                out = admin.cli("flash", board.serial_url, "--board", "rpi-pico-w", "--node", node).stdout
                assert broker_url in out, out
            wait_until(lambda: all(nodes().get(n, {}).get("state") == "online" for n in MCUS), 60, "flashed boards online")

            # 5. A Pi on the LAN, provisioned over SSH, its service started as systemd would.
            sshd = Sshd(os.path.join(base, "pi-sshd"), address=lan.ip("pi"), netns=lan.ns("pi"))
            os.makedirs(sshd.workdir)
            sshd.start()
            pi_root = os.path.join(base, "pi-root")
            # The board's Python already has the inference backend (as a Pi OS image with it
            # would): the namespace has no way to the package index.
            copy_venv(os.path.join(os.path.dirname(os.path.dirname(sys.executable))),
                      os.path.join(pi_root, "opt", "edgefleet", "venv"))
            admin.cli("provision", sshd.target, "--board", "rpi4", "--node", PI, "--ssh-key", sshd.client_key,
                      "--known-hosts", sshd.known_hosts, "--root", pi_root, timeout=400)
            command, workdir = unit_exec_start(pi_root)
            # Restarted whenever it exits (an update's reboot included), as the unit's Restart=always has systemd do.
            pi = LinuxBoard(PI, lan.exec_argv("pi", command), workdir, console_log=os.path.join(base, "pi.console"))
            boards.append(pi)
            pi.start()
            wait_until(lambda: nodes().get(PI, {}).get("state") == "online", 60, "the provisioned Pi online")
            first = nodes()
            for node in MCUS + (PI,):
                assert first[node]["link"] == "tls" and first[node]["slot"] == "slot_a", first[node]
            first_version = first[PI]["fw"]

            # 6. The operator applies a fleet file; results arrive from every board.
            fleet_file = os.path.join(base, "fleet.toml")
            with open(fleet_file, "w") as f:
                f.write(FLEET)
            ops.cli("apply", fleet_file)

            def serving():
                snap = status()
                return all(w["results"] > 2 and len(w["nodes"]) == w["replicas"] for w in snap["workloads"]) and \
                    all(n["results"] > 0 for n in snap["nodes"] if n["workloads"])
            wait_until(serving, 120, "every replica placed and every placed board delivering results")

            # 7. v2, built and signed on the fleet host, deployed by the operator: canary first.
            mcu_bundle, pi_bundle = os.path.join(base, "mcu-2.0.efb"), os.path.join(base, "pi-2.0.efb")
            admin.cli("bundle", "--board", "rpi-pico-w", "--version", "2.0", "--arch", "x64", "--simulated",
                      "--models", "digits_dense", "-o", mcu_bundle)
            admin.cli("bundle", "--board", "rpi4", "--version", "2.0", "-o", pi_bundle)
            out = ops.cli("deploy", mcu_bundle, "--to", "rpi-pico-w", "--canary", "1", "--soak", "3", "--quiet").stdout
            assert "to 2 node(s) in 2 wave(s)" in out and "2.0 healthy on 2 node(s)" in out, out
            ops.cli("deploy", pi_bundle, "--to", "rpi4", "--soak", "3", "--quiet")
            wait_until(lambda: all(n["fw"] == "2.0" and n["slot"] == "slot_b" and n["state"] == "online"
                                   for n in nodes().values()), 60, "every node on 2.0 in slot b")

            # 8. Rollback: every node back on its first version, in slot a.
            ops.cli("rollback", "--to", "all")
            wait_until(lambda: all(n["fw"] == first_version and n["slot"] == "slot_a" for n in nodes().values()), 60,
                       "every node back on %s" % first_version)

            # 9. mcu-1 loses power, and gets it back: offline, then online with a new boot, working.
            before = nodes()["mcu-1"]
            boards[0].power_off()
            wait_until(lambda: nodes()["mcu-1"]["state"] == "offline", 60, "mcu-1 offline after its power cut")
            boards[0].start()
            wait_until(lambda: nodes()["mcu-1"]["state"] == "online" and nodes()["mcu-1"]["boot"] > before["boot"], 60,
                       "mcu-1 back with a new boot")

            # 10. Drain a board with work: its work moves, and serves from elsewhere.
            busy = next(n for n in MCUS if nodes()[n]["workloads"])
            moved = nodes()[busy]["workloads"]
            ops.cli("drain", busy)
            wait_until(lambda: not nodes()[busy]["workloads"], 90, "%s drained" % busy)
            after = status()
            for wid in moved:
                wl = next(w for w in after["workloads"] if w["id"] == wid)
                assert busy not in wl["nodes"] and wl["nodes"], wl
            counts = {n: nodes()[n]["results"] for n in nodes()}
            wait_until(lambda: any(nodes()[n]["results"] > counts[n] for n in nodes() if n != busy), 60,
                       "results from the nodes that took the drained work")
        finally:
            for proc in procs:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for board in boards:
                board.stop()
            if sshd is not None:
                sshd.stop()
