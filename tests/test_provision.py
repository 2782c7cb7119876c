"""`edgefleet provision` over real SSH: an OpenSSH server the test starts on loopback, with a
throwaway host key and user key, is the Pi-class board; everything goes under a --root folder.

The venv is a real one made by the board's python3 with the real tflite-runtime and numpy<2
(pip's cache keeps that to seconds), and the node it installs is started from its unit's
ExecStart against a real mosquitto. That first full run is made once (the `provisioned`
fixture); the host key and sudo tests start from a copy of its venv, so each of their runs
takes a second or two."""
import contextlib
import grp
import io
import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import zipfile

import paho.mqtt.client as mqtt
import pytest

from edgefleet.controller import cli
from edgefleet.controller.install import hostkeys, image, keys, provision
from edgefleet.controller.errors import EXIT_CONNECTION, EXIT_OPERATION, ChangedHostKey, ConfigError, RevokedHostKey, UnknownHostKey
from support.secrets import assert_no_secret
from support.sshd import Sshd, sshd_available
from support.venvcopy import copy_venv

NODE = "pi-prov"
NODE_DIR = os.path.join("opt", "edgefleet")
UNIT = os.path.join("etc", "systemd", "system", provision.UNIT_NAME)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not sshd_available():
        pytest.fail("OpenSSH's server is not installed; `make test` installs it (apt-get install openssh-server)")
    server = Sshd(str(tmp_path_factory.mktemp("sshd"))).start()
    yield server
    server.stop()


SERVERS_OWN = object()


def run_cli(sshd, root, broker, *extra, known_hosts=SERVERS_OWN):
    """(exit code, stdout, stderr) of `edgefleet provision` against `sshd`; its host key is
    checked against the server's own known_hosts file unless `known_hosts` names another (None:
    no --known-hosts, so the user's default)."""
    if known_hosts is SERVERS_OWN:
        known_hosts = sshd.known_hosts
    argv = ["provision", sshd.target, "--board", "rpi4", "--node", NODE, "--broker", broker,
            "--ssh-key", sshd.client_key, "--root", root] + list(extra)
    if known_hosts is not None:
        argv += ["--known-hosts", known_hosts]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def provision_cli(sshd, root, broker, *extra, **options):
    code, out, err = run_cli(sshd, root, broker, *extra, **options)
    assert code == 0, err
    return out


class Provisioned:
    """The module's one full first run: its install root, its EDGEFLEET_HOME, its output."""

    def __init__(self, base, broker):
        self.home = os.path.join(base, "home")
        self.root = os.path.join(base, "root")
        self.broker = broker
        self.output = None

    @property
    def node_dir(self):
        return os.path.join(self.root, NODE_DIR)

    @property
    def wheel(self):
        """The wheel it built and installed, for runs that need not build one again."""
        wheels = os.path.join(self.node_dir, "wheels")
        return os.path.join(wheels, os.listdir(wheels)[0])

    def copy_venv(self, root, python=None):
        """`root` with this run's venv (the edgefleet stamp included) in its node directory:
        provisioning there finds Python, backend and package in place. With `python`, the copy
        is moved onto that interpreter (same minor version: the packages stay usable), for a
        user who cannot run the one root's session made it with (pyenv's, under /root)."""
        venv = os.path.join(root, NODE_DIR, "venv")
        copy_venv(os.path.join(self.node_dir, "venv"), venv)
        if python:
            # venv --upgrade keeps existing interpreter links: without them it makes new ones.
            for name in os.listdir(os.path.join(venv, "bin")):
                if name.startswith("python"):
                    os.remove(os.path.join(venv, "bin", name))
            subprocess.run([python, "-m", "venv", "--upgrade", "--without-pip", venv], check=True)


@pytest.fixture(scope="module")
def provisioned(sshd, mosquitto, tmp_path_factory):
    run = Provisioned(str(tmp_path_factory.mktemp("provisioned")), "%s:%d" % (mosquitto.host, mosquitto.port))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEFLEET_HOME", run.home)
        run.output = provision_cli(sshd, run.root, run.broker)
    return run


def mode_and_owners(path):
    st = os.stat(path)
    return oct(stat.S_IMODE(st.st_mode)), pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name


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
        self.messages = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="provision-test-observer")
        self.client.on_message = lambda c, u, m: (self.messages.append(json.loads(m.payload)), self.event.set())
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("ef/node/%s/hello" % node, qos=1)
        self.client.loop_start()

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.e2e
def test_provision_twice_then_change_one_thing_and_the_node_runs(sshd, mosquitto, provisioned, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", provisioned.home)
    root = provisioned.root
    broker = provisioned.broker

    first = provisioned.output
    assert "changed: node dir, python venv, edgefleet, image files, systemd unit" in first
    assert "systemd is not running" in first and "unit installed, not started" in first
    assert "host key       unchanged ssh-ed25519 %s, known in %s" % (sshd.fingerprint(), sshd.known_hosts) in first

    second = provision_cli(sshd, root, broker)
    assert "nothing to do" in second
    assert all(" changed " not in line for line in second.splitlines()), second

    # Run as root: the secrets are root's and the (service) user's group's alone, the rest root's.
    node_dir = os.path.join(root, NODE_DIR)
    key_file = os.path.join(node_dir, keys.BOARD_FILE)
    assert mode_and_owners(key_file) == ("0o640", "root", "root")
    assert mode_and_owners(os.path.join(node_dir, "config.json")) == ("0o640", "root", "root")
    assert mode_and_owners(os.path.join(root, UNIT)) == ("0o644", "root", "root")
    assert keys.parse(open(key_file).read()) == keys.public(keys.load())
    assert_no_secret(node_dir, keys.load(), skip=("venv",))   # venv: pip's files, not ours
    with open(os.path.join(node_dir, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["node"] == NODE and cfg["hal"] == "linux" and cfg["broker"]["port"] == mosquitto.port
    # Laid out with A/B slots: the code and models in slot_a, the pointer naming it.
    with open(os.path.join(node_dir, "slots.json")) as f:
        assert json.load(f)["active"] == "slot_a"
    assert os.path.exists(os.path.join(node_dir, "slot_a", "MANIFEST"))
    assert os.path.exists(os.path.join(node_dir, "slot_a", "firmware", "node.py"))
    assert os.path.exists(os.path.join(node_dir, "slot_a", "models", "digits_dense", "model.tflite"))
    assert not os.path.exists(os.path.join(node_dir, "models"))

    unit = unit_fields(os.path.join(root, UNIT))
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
    # The node runs the code of its slot (linux_main boots it from the pointer).
    assert hello.messages[0]["slot"] == "slot_a" and hello.messages[0]["fw"] == image.firmware_version()

    # A different broker: config.json is rewritten, nothing else; the node's state is kept, and
    # models a flat image (before slots) held at the node directory's root are removed.
    state = {}
    for dirpath, _dirs, names in os.walk(os.path.join(node_dir, "data")):
        for name in names:
            state[os.path.join(dirpath, name)] = open(os.path.join(dirpath, name), "rb").read()
    assert os.path.join(node_dir, "data", "boot.json") in state
    os.makedirs(os.path.join(node_dir, "models", "digits_dense"))
    open(os.path.join(node_dir, "models", "digits_dense", "model.tflite"), "wb").close()
    third = provision_cli(sshd, root, "%s:%d" % (mosquitto.host, mosquitto.port + 1))
    assert "changed: image files" in third
    assert "wrote config.json;" in third and "wrote sign.pub" not in third and "removed models/" in third
    assert not os.path.exists(os.path.join(node_dir, "models"))
    for path, data in state.items():
        assert open(path, "rb").read() == data, path


@pytest.mark.e2e
def test_provision_over_tls_gives_the_node_its_login_and_the_ca_and_it_connects(sshd, provisioned, tmp_path,
                                                                                    monkeypatch):
    from edgefleet.controller.broker import SecureMosquitto
    from edgefleet.controller.mqttlink import BrokerLink
    from edgefleet.controller.netutil import BrokerAddress
    from edgefleet.controller.security.material import FleetSecurity
    from edgefleet.controller.security.principals import OPERATOR
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))
    security = FleetSecurity()
    security.init()
    root = str(tmp_path / "root")
    provisioned.copy_venv(root)
    with SecureMosquitto(security) as broker:
        out = provision_cli(sshd, root, broker.url, "--wheel", provisioned.wheel)
        assert "wrote ca.der" in out or "ca.der" in out, out
        node_dir = os.path.join(root, NODE_DIR)
        with open(os.path.join(node_dir, "config.json")) as f:
            link = json.load(f)["broker"]
        assert link["tls"] is True and link["user"] == NODE and link["password"] == security.node(NODE).password
        assert open(os.path.join(node_dir, "ca.der"), "rb").read() == security.ca_der()
        assert mode_and_owners(os.path.join(node_dir, "config.json"))[0] == "0o640"

        said_hello = threading.Event()
        observer = BrokerLink(BrokerAddress.parse(broker.url), OPERATOR, security).client("provision-tls-observer")
        observer.on_message = lambda c, u, m: said_hello.set()
        observer.connect(broker.local_host, broker.port)
        observer.subscribe("ef/node/%s/hello" % NODE, qos=1)
        observer.loop_start()
        unit = unit_fields(os.path.join(root, UNIT))
        node = subprocess.Popen(shlex.split(unit["ExecStart"]), cwd=unit["WorkingDirectory"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            ok = said_hello.wait(30)
        finally:
            node.terminate()
            output = node.communicate(timeout=10)[0].decode(errors="replace")
            observer.loop_stop()
            observer.disconnect()
        assert ok, output[-2000:]


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
    assert code == EXIT_CONNECTION and err.startswith("edgefleet: 127.0.0.1: SSH failed during connect"), err


def test_microcontroller_is_refused_with_the_command_to_use(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))
    with pytest.raises(ConfigError, match="edgefleet flash PORT --board esp32"):
        provision.provision("nobody@127.0.0.1:1", "esp32", "n", ("h", 1883))


# -- host keys ---------------------------------------------------------------------------------

def wait_for_log(sshd, offset, text, timeout=5):
    """sshd's log since `offset`, once it holds `text` (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        logged = sshd.log_since(offset)
        if text in logged or time.monotonic() > deadline:
            return logged
        time.sleep(0.05)


def test_an_unknown_host_is_refused_before_anything_is_sent(sshd, tmp_path, monkeypatch):
    # No --known-hosts: the user's own ~/.ssh/known_hosts, which does not name the test server.
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))
    root = str(tmp_path / "root")
    default = str(tmp_path / "user" / ".ssh" / "known_hosts")
    offset = sshd.log_size()

    code, out, err = run_cli(sshd, root, "h:1883", known_hosts=None)
    assert code == EXIT_CONNECTION, out
    fp = sshd.fingerprint()
    assert err.startswith("edgefleet: %s: unknown SSH host key ssh-ed25519 %s (no entry in %s)"
                          % (sshd.host_name, fp, default)), err
    assert "--host-key %s" % fp in err and "--trust-on-first-use" in err
    # Nothing reached the board: no install root, and the server saw no login at all.
    assert not os.path.exists(root)
    logged = wait_for_log(sshd, offset, "[preauth]")
    assert "[preauth]" in logged and "Accepted" not in logged, logged
    assert not os.path.exists(default)

    # The same through the API: a typed error carrying the key.
    with pytest.raises(UnknownHostKey) as info:
        provision.provision(sshd.target, "rpi4", NODE, ("h", 1883), key_filename=sshd.client_key,
                            known_hosts=str(tmp_path / "empty"), root=root)
    e = info.value
    assert (e.host, e.key_type, e.fingerprint, e.step) == (sshd.host_name, "ssh-ed25519", fp, "host key")
    assert not os.path.exists(root)


@pytest.mark.e2e   # starts from the `provisioned` fixture's full first run
def test_trust_on_first_use_records_the_key_and_a_changed_key_is_refused(provisioned, tmp_path):
    os.makedirs(str(tmp_path / "sshd"))
    board = Sshd(str(tmp_path / "sshd")).start()
    try:
        root = str(tmp_path / "root")
        provisioned.copy_venv(root)
        known = tmp_path / "known_hosts"
        other = "pi9.lan ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBSF1zKhuF6mvyq3U5F8e7GMJtLxR7fDgY3/0kgHh+Be"
        known.write_text("# the fleet's boards\n" + other)    # no newline at the end: appending must add one
        first_key = board.fingerprint()

        out = provision_cli(board, root, provisioned.broker, "--wheel", provisioned.wheel, "--trust-on-first-use",
                            known_hosts=str(known))
        assert "host key       changed   trusted on first use: recorded ssh-ed25519 %s in %s" % (first_key, known) in out
        assert known.read_text().splitlines()[:2] == ["# the fleet's boards", other]
        # OpenSSH itself finds the recorded entry.
        found = subprocess.run(["ssh-keygen", "-F", board.host_name, "-f", str(known)], capture_output=True, text=True)
        assert found.returncode == 0 and open(board.known_hosts).read().strip() in found.stdout, found.stdout

        board.rotate_host_key()
        new_key = board.fingerprint()
        before = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
        code, out, err = run_cli(board, root, provisioned.broker, "--wheel", provisioned.wheel, "--trust-on-first-use",
                                 known_hosts=str(known))
        assert code == EXIT_CONNECTION, out
        assert err.startswith("edgefleet: %s: SSH host key CHANGED: it presents ssh-ed25519 %s, but %s lists "
                              "ssh-ed25519 %s (line 3)" % (board.host_name, new_key, known, first_key)), err
        assert "ssh-keygen -R '%s' -f %s" % (board.host_name, known) in err
        after = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
        assert after == before and len(known.read_text().splitlines()) == 3
    finally:
        board.stop()


def key_of(pub_path):
    key_type, key = open(pub_path).read().split()[:2]
    return key_type, hostkeys.parse_key(key_type, key)


def test_known_hosts_hashed_revoked_and_pinned(tmp_path):
    names = ("ok", "revoked", "stranger")
    for name in names:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    ok, revoked, stranger = (key_of(str(tmp_path / (name + ".pub"))) for name in names)
    pub = {name: open(str(tmp_path / (name + ".pub"))).read().split()[1] for name in names}
    known = tmp_path / "known_hosts"
    known.write_text("[10.0.0.5]:2222 ssh-ed25519 %s\n" % pub["ok"])
    # Hashed by OpenSSH itself (HashKnownHosts), then markers paramiko's own loader chokes on.
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True, capture_output=True)
    assert "10.0.0.5" not in known.read_text()
    with open(known, "a") as f:
        f.write("@cert-authority *.lan ssh-ed25519 %s\n@revoked * ssh-ed25519 %s\n" % (pub["ok"], pub["revoked"]))

    check = hostkeys.HostKeyCheck(str(known))
    assert check.check("[10.0.0.5]:2222", *ok) == "known"
    with pytest.raises(ChangedHostKey) as changed:
        check.check("[10.0.0.5]:2222", *stranger)
    assert changed.value.expected == [hostkeys.fingerprint(ok[1])]
    with pytest.raises(UnknownHostKey):
        check.check("10.0.0.5", *ok)
    with pytest.raises(RevokedHostKey):
        hostkeys.HostKeyCheck(str(known), trust_on_first_use=True).check("new.lan", *revoked)

    # A fingerprint as ssh-keygen prints it pins exactly that key, whatever the file says.
    printed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "stranger.pub")], capture_output=True,
                             text=True, check=True).stdout.split()[1]
    assert printed == hostkeys.fingerprint(stranger[1])
    pinned = hostkeys.HostKeyCheck(str(known), pinned=printed)
    assert pinned.check("[10.0.0.5]:2222", *stranger) == "pinned"
    with pytest.raises(ChangedHostKey):
        pinned.check("[10.0.0.5]:2222", *ok)
    with pytest.raises(ConfigError, match="not a SHA256 fingerprint"):
        hostkeys.HostKeyCheck(str(known), pinned="SHA256:short")
    with pytest.raises(ConfigError, match="exclude each other"):
        hostkeys.HostKeyCheck(str(known), trust_on_first_use=True, pinned=printed)


# -- a non-root SSH user with sudo -------------------------------------------------------------

@contextlib.contextmanager
def throwaway_user():
    """A throwaway system user, its home in a fresh folder under /tmp (which it can reach, unlike
    pytest's root-only tmp_path); yields (name, folder, grant_sudo), grant_sudo() giving it
    passwordless sudo. All of it is removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating a user with sudo needs root")
    if not (shutil.which("sudo") and shutil.which("useradd")):
        pytest.skip("sudo or useradd is missing (`make system-deps` installs sudo as root)")
    name = "ef-prov-%d" % os.getpid()
    base = tempfile.mkdtemp(prefix="edgefleet-sudo-")
    os.chmod(base, 0o755)
    sudoers = "/etc/sudoers.d/edgefleet-test-%s" % name

    def grant_sudo():
        with open(sudoers, "w") as f:
            f.write("%s ALL=(ALL) NOPASSWD: ALL\n" % name)
        os.chmod(sudoers, 0o440)

    # '*' rather than useradd's '!': sshd without PAM refuses logins to a locked account.
    subprocess.run(["useradd", "--system", "--user-group", "--create-home", "--home-dir", os.path.join(base, "home"),
                    "--shell", "/bin/sh", "--password", "*", name], check=True)
    try:
        yield name, base, grant_sudo
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(sudoers)
        # sshd's session processes for the user outlive its connections by a moment, and
        # userdel refuses a user that still runs anything.
        uid = pwd.getpwnam(name).pw_uid
        deadline = time.monotonic() + 10
        while processes_of(uid) and time.monotonic() < deadline:
            time.sleep(0.05)
        removed = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True)
        shutil.rmtree(base, ignore_errors=True)
        if removed.returncode not in (0, 12):   # 12: no mail spool to remove, the user is gone
            raise RuntimeError("could not remove the test user %s: %s" % (name, removed.stderr.strip()))


def processes_of(uid):
    """PIDs of the processes running as `uid`."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            with open("/proc/%s/status" % pid) as f:
                if any(line.split()[1:2] == [str(uid)] for line in f if line.startswith("Uid:")):
                    pids.append(int(pid))
    return pids


@pytest.mark.e2e   # starts from the `provisioned` fixture's full first run
def test_a_non_root_user_installs_root_owned_files_through_sudo(provisioned):
    with throwaway_user() as (user, base, grant_sudo):
        board = Sshd(os.path.join(base, "sshd"), user=user)
        os.makedirs(board.workdir)
        board.start()
        try:
            root = os.path.join(base, "root")
            # The python3 a login without a profile of its own finds (sshd's default PATH).
            provisioned.copy_venv(root, python=shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin"))
            # The node directory is the SSH user's (the venv in it only needs to be readable).
            for path in (root, os.path.join(root, "opt"), os.path.join(root, NODE_DIR)):
                os.chown(path, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
            node_dir = os.path.join(root, NODE_DIR)
            secrets = [os.path.join(node_dir, name) for name in (keys.BOARD_FILE, "config.json")]
            model = os.path.join(node_dir, "slot_a", "models", "digits_dense", "model.tflite")
            staged_before = set(os.listdir("/tmp"))
            # The key pinned as its fingerprint: no known_hosts entry needed.
            pin = ("--wheel", provisioned.wheel, "--host-key", board.fingerprint())
            no_file = os.path.join(base, "none")

            # Without sudo: nothing can go under /, and under a folder the files stay the user's,
            # with the same modes.
            code, out, err = run_cli(board, "/", provisioned.broker, *pin, known_hosts=no_file)
            assert code == EXIT_OPERATION and "%s is not root and cannot use sudo without a password" % user in err, err
            out = provision_cli(board, root, provisioned.broker, *pin, known_hosts=no_file)
            assert "changed: image files, systemd unit" in out, out
            assert [mode_and_owners(path) for path in secrets] == [("0o640", user, user)] * 2
            assert mode_and_owners(os.path.join(root, UNIT)) == ("0o644", user, user)

            # With sudo: the same contents are installed again, now root's.
            grant_sudo()
            out = provision_cli(board, root, provisioned.broker, *pin, known_hosts=no_file)
            assert "ssh-ed25519 %s, as given with --host-key" % board.fingerprint() in out
            assert "changed: image files, systemd unit" in out, out
            assert mode_and_owners(os.path.join(root, UNIT)) == ("0o644", "root", "root")
            assert [mode_and_owners(path) for path in secrets] == [("0o640", "root", user)] * 2
            # The slot stays the user's, who runs the node: an update rewrites it.
            assert mode_and_owners(model) == ("0o644", user, user)
            assert mode_and_owners(node_dir)[1] == user
            # The staging directories went with their runs.
            assert not [n for n in set(os.listdir("/tmp")) - staged_before if n.startswith("edgefleet-provision.")]

            again = provision_cli(board, root, provisioned.broker, *pin, known_hosts=no_file)
            assert "nothing to do" in again, again
        finally:
            board.stop()
