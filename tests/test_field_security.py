"""A user's secured fleet, through the CLI only, with the board on a network that is not
loopback: `init`, `broker --bind` on a veth address, the broker named once in the config file,
`flash` of an empty MicroPython board that runs in its own network namespace, `controller`,
`status`; then the board is stolen and `revoke` locks it out of the running broker."""
import json
import os
import subprocess
import sys
import time

import pytest

from edgefleet.controller.netutil import free_port
from edgefleet.controller.sim.simboard import McuBoard
from support.netns import NetNamespace
from support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.micropython]
NODE = "field-1"
FLEET = """
[[workload]]
id = "digits"
model = "digits_dense"
rate = 4.0
replicas = 1
input = { kind = "samples" }
"""


def test_secured_fleet_through_the_cli_on_a_real_interface(tmp_path):
    env = dict(os.environ, EDGEFLEET_HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    env.pop("EDGEFLEET_BROKER", None)

    def cli(*argv, ok=True):
        proc = subprocess.run([sys.executable, "-m", "edgefleet.controller.cli"] + list(argv), capture_output=True,
                              text=True, timeout=120, env=env)
        if ok:
            assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
        return proc

    def spawn(*argv):
        log = open(tmp_path / ("%s.log" % argv[0]), "wb")
        return subprocess.Popen([sys.executable, "-m", "edgefleet.controller.cli"] + list(argv), env=env,
                                stdout=log, stderr=subprocess.STDOUT)

    def node():
        out = cli("status", "--db", db, "--json").stdout
        return next((n for n in json.loads(out)["nodes"] if n["id"] == NODE), None)

    db = str(tmp_path / "fleet.db")
    (tmp_path / "fleet.toml").write_text(FLEET)
    with NetNamespace("sec") as net:
        port = free_port(net.host_ip)
        cli("init", "--broker-host", net.host_ip)
        os.makedirs(tmp_path / "xdg" / "edgefleet")
        (tmp_path / "xdg" / "edgefleet" / "config.toml").write_text('broker = "mqtts://%s:%d"\n' % (net.host_ip, port))
        flash = tmp_path / "board"
        flash.mkdir()
        board = McuBoard("field", str(flash), 196608 + 16384, console_log=str(tmp_path / "console.log"), netns=net.name)
        procs = []
        try:
            procs.append(spawn("broker", "--bind", net.host_ip, "--port", str(port)))
            board.start()
            assert board.wait_console(b">>> ", timeout=10)
            out = cli("flash", board.serial_url, "--board", "rpi-pico-w", "--node", NODE, "--model", "digits_dense").stdout
            assert "mqtts://%s:%d" % (net.host_ip, port) in out, out
            procs.append(spawn("controller", "--fleet", str(tmp_path / "fleet.toml"), "--db", db))
            wait_until(lambda: os.path.exists(db) and (node() or {}).get("results", 0) > 3, 90,
                       "results from the flashed board over TLS")
            seen = node()
            assert seen["state"] == "online" and seen["link"] == "tls", seen
            assert "connected to %s:%d" % (net.host_ip, port) in (tmp_path / "console.log").read_bytes().decode(errors="replace")

            # The board is stolen: its login goes, and the running broker stops taking it.
            cli("revoke", NODE)
            wait_until(lambda: node()["state"] == "offline", 30, "the revoked board offline")
            assert wait_until(lambda: "not authorized" in (tmp_path / "console.log").read_bytes().decode(errors="replace"), 20,
                              "the board refused by the broker")
            results = node()["results"]
            time.sleep(3)
            assert node()["results"] == results
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(15)
            board.stop()
