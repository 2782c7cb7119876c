"""`edgefleet provision` over real SSH: an OpenSSH server the test starts on loopback, with a
throwaway host key and user key, is the Pi-class board; everything goes under a --root folder.

The venv is a real one made by the board's python3 with the real tflite-runtime and numpy<2
(pip's cache keeps that to seconds), and the node it installs is started from its unit's
ExecStart against a real mosquitto."""
import json
import os
import shlex
import subprocess
import threading
import zipfile

import paho.mqtt.client as mqtt
import pytest

from edgefleet.controller import cli
from edgefleet.controller.install import keys, provision
from edgefleet.controller.errors import ConfigError
from support.sshd import Sshd, sshd_available

NODE = "pi-prov"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not sshd_available():
        pytest.fail("OpenSSH's server is not installed; `make test` installs it (apt-get install openssh-server)")
    server = Sshd(str(tmp_path_factory.mktemp("sshd"))).start()
    yield server
    server.stop()


def provision_cli(capsys, sshd, root, broker, *extra):
    code = cli.main(["provision", sshd.target, "--board", "rpi4", "--node", NODE, "--broker", broker,
                     "--ssh-key", sshd.client_key, "--root", root] + list(extra))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def unit_fields(path):
    """The unit's settings, and under "sections" its section names in order."""
    fields = {"sections": []}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("#") or not line:
                continue
            if line.startswith("[") and line.endswith("]"):
                fields["sections"].append(line[1:-1])
                continue
            name, sep, value = line.partition("=")
            assert sep and fields["sections"], "line outside a section: %r" % line
            fields[name] = value
    return fields


class Hello:
    def __init__(self, broker, node):
        self.event = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="provision-test-observer")
        self.client.on_message = lambda c, u, m: self.event.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("ef/node/%s/hello" % node, qos=1)
        self.client.loop_start()

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.e2e
def test_provision_twice_then_change_one_thing_and_the_node_runs(sshd, mosquitto, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))
    root = str(tmp_path / "root")
    broker = "%s:%d" % (mosquitto.host, mosquitto.port)

    first = provision_cli(capsys, sshd, root, broker)
    assert "changed: node dir, python venv, edgefleet, image files, systemd unit" in first
    assert "systemd is not running" in first and "unit installed, not started" in first

    second = provision_cli(capsys, sshd, root, broker)
    assert "nothing to do" in second
    assert all(" changed " not in line for line in second.splitlines()), second

    node_dir = os.path.join(root, "opt", "edgefleet")
    key_file = os.path.join(node_dir, keys.BOARD_FILE)
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
    assert keys.parse(open(key_file).read()) == keys.load()
    with open(os.path.join(node_dir, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["node"] == NODE and cfg["hal"] == "linux" and cfg["broker"]["port"] == mosquitto.port

    unit = unit_fields(os.path.join(root, "etc", "systemd", "system", provision.UNIT_NAME))
    assert unit["Type"] == "notify" and unit["Restart"] == "always" and int(unit["WatchdogSec"]) > 0
    assert unit["NotifyAccess"] == "main" and unit["sections"] == ["Unit", "Service", "Install"], unit
    assert unit["WorkingDirectory"] == node_dir
    command = shlex.split(unit["ExecStart"])
    assert command[0] == os.path.join(node_dir, "venv", "bin", "python")
    assert command[1:] == ["-m", "edgefleet.boards.linux_main", "config.json"]

    # The venv has the backend for this Python and numpy<2, and the node starts from the unit's
    # ExecStart in its WorkingDirectory and says hello on the broker.
    check = subprocess.run([command[0], "-c", "import numpy, tflite_runtime.interpreter; print(numpy.__version__)"],
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.startswith("1."), check.stderr
    hello = Hello(mosquitto, NODE)
    node = subprocess.Popen(command, cwd=unit["WorkingDirectory"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        said_hello = hello.event.wait(20)
    finally:
        node.terminate()
        output = node.communicate(timeout=10)[0].decode(errors="replace")
        hello.stop()
    assert said_hello, output[-2000:]

    # A different broker: config.json is rewritten, nothing else.
    third = provision_cli(capsys, sshd, root, "%s:%d" % (mosquitto.host, mosquitto.port + 1))
    assert "changed: image files" in third
    assert "wrote config.json" in third and "wrote fleet.key" not in third


def test_backend_follows_the_boards_python():
    assert provision.backend_requirements((3, 11)) == ("tflite-runtime>=2.14", "numpy<2")
    assert provision.backend_requirements((3, 9)) == ("tflite-runtime>=2.14", "numpy<2")
    assert provision.backend_requirements((3, 12)) == ("ai-edge-litert>=2.3",)


def test_wheel_digest_ignores_zip_timestamps_but_not_contents(tmp_path):
    def wheel(name, members, stamp):
        path = str(tmp_path / name)
        with zipfile.ZipFile(path, "w") as z:
            for member, data in members:
                z.writestr(zipfile.ZipInfo(member, date_time=stamp), data)
        return path

    a = wheel("a.whl", [("x.py", b"1"), ("y.py", b"2")], (2020, 1, 1, 0, 0, 0))
    b = wheel("b.whl", [("y.py", b"2"), ("x.py", b"1")], (2024, 6, 1, 12, 0, 0))
    c = wheel("c.whl", [("x.py", b"1"), ("y.py", b"3")], (2020, 1, 1, 0, 0, 0))
    assert open(a, "rb").read() != open(b, "rb").read()
    assert provision.wheel_digest(a) == provision.wheel_digest(b) != provision.wheel_digest(c)


def test_unit_template_is_filled_in():
    text = provision.render_unit("n7", "pi", "/opt/edgefleet")
    assert "Description=edgefleet node n7" in text and "User=pi" in text
    assert "ExecStart=/opt/edgefleet/venv/bin/python -m edgefleet.boards.linux_main config.json" in text
    assert "$" not in text


def test_unreachable_board_is_a_clear_error_from_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))
    from edgefleet.controller.netutil import free_port
    port = free_port()   # nothing listens there
    code = cli.main(["provision", "nobody@127.0.0.1:%d" % port, "--board", "rpi4", "--broker", "h:1883",
                     "--root", str(tmp_path / "root")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("edgefleet: 127.0.0.1: SSH failed during connect"), err


def test_microcontroller_is_refused_with_the_command_to_use(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))
    with pytest.raises(ConfigError, match="edgefleet flash PORT --board esp32"):
        provision.provision("nobody@127.0.0.1:1", "esp32", "n", ("h", 1883))
