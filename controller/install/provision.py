"""`edgefleet provision USER@HOST --board rpi4`: a Pi-class Linux board set up over SSH (Fabric).

Every step checks the board first and changes only what differs, and reports "changed",
"unchanged" or "skipped"; a second run over an unchanged setup changes nothing and says
"nothing to do". The steps:
1. node directory   ROOT/opt/edgefleet (--dir), created and owned by the SSH user.
2. python venv      NODE_DIR/venv from the board's python3 (--python), with the inference backend
                    its Python has wheels for: tflite-runtime (with numpy<2, which it needs) up to
                    Python 3.11, ai-edge-litert (LiteRT) from 3.12 on.
3. edgefleet        a wheel of this edgefleet (built here from the source tree, or --wheel),
                    uploaded and installed into the venv; re-installed only when the digest of
                    the wheel's contents (names and bytes of its members, so a rebuild of the same
                    code counts as the same) differs from the one stored at the last install.
4. image files      what controller/install/image.py's write_image() builds for the board (config.json,
                    models; whatever it holds), plus the fleet key (keys.BOARD_FILE, mode 0600);
                    one sha256sum on the board decides which files to upload.
5. systemd unit     boards/systemd/edgefleet-node.service filled in, as
                    ROOT/etc/systemd/system/edgefleet-node.service.
6. service          `systemctl daemon-reload` (when the unit changed), `enable`, and start or
                    restart (when anything changed) -- only where systemd runs (/run/systemd/system
                    exists) and ROOT is /; otherwise the unit is installed and not started, and the
                    step says so.

ROOT (--root, default /) prefixes every path written on the board, so tests install into a
folder instead of /opt and /etc. A non-root SSH user gets `sudo -n` for what needs root (the
node directory under /opt, the unit under /etc, systemctl).
"""
import hashlib
import io
import os
import posixpath
import shlex
import shutil
import string
import subprocess
import sys
import tempfile
import zipfile

from edgefleet import boards as boards_pkg
from edgefleet.boards import catalog

from . import image, keys
from ..errors import ConfigError, ProvisionError

UNIT_NAME = "edgefleet-node.service"
UNIT_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(boards_pkg.__file__)), "systemd", UNIT_NAME)
WHEEL_STAMP = "venv/edgefleet-wheel.sha256"
# What a node's venv needs besides edgefleet's own dependencies, by the board's Python.
TFLITE_RUNTIME = ("tflite-runtime>=2.14", "numpy<2")
LITERT = ("ai-edge-litert>=2.3",)
SOURCE_TREE_SKIP = {".git", ".venv", "build", "dist", "tests", "tools", "docs", ".pytest_cache"}


class StepResult:
    def __init__(self, name, status, detail):
        self.name = name
        self.status = status    # "changed", "unchanged" or "skipped"
        self.detail = detail

    def __str__(self):
        return "%-14s %-9s %s" % (self.name, self.status, self.detail)


def backend_requirements(python_version):
    """The pip requirements of the inference backend for a (major, minor) Python."""
    return TFLITE_RUNTIME if tuple(python_version) <= (3, 11) else LITERT


def backend_check(python_version):
    """Python code that exits 0 when the venv has the backend backend_requirements() installs."""
    if tuple(python_version) <= (3, 11):
        return ("import sys, numpy, tflite_runtime.interpreter; "
                "sys.exit(int(numpy.__version__.split('.')[0]) >= 2)")
    return "import ai_edge_litert.interpreter"


def render_unit(node_id, user, node_dir):
    with open(UNIT_TEMPLATE) as f:
        return string.Template(f.read()).substitute(node=node_id, user=user, node_dir=node_dir)


# -- the edgefleet wheel -------------------------------------------------------------------------

def source_root():
    """The source checkout this edgefleet runs from, or None for an installed package."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(image.__file__))))
    return root if os.path.exists(os.path.join(root, "pyproject.toml")) else None


def build_wheel(dest_dir):
    """Build a wheel of this edgefleet's source tree into dest_dir; returns its path.

    The tree is copied first, so that the build/ folder setuptools leaves in a checkout (which
    can hold modules deleted since) never ends up in the wheel.
    """
    root = source_root()
    if root is None:
        raise ConfigError("edgefleet runs from an installed package, not a source checkout: "
                          "pass --wheel PATH (a wheel of the edgefleet to install)")
    with tempfile.TemporaryDirectory(prefix="edgefleet-src-") as copy:
        for name in os.listdir(root):
            if name in SOURCE_TREE_SKIP or name.endswith(".egg-info") or name.startswith("."):
                continue
            src = os.path.join(root, name)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(copy, name),
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, copy)
        command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dest_dir, copy]
        proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError("building the edgefleet wheel failed: %s" % proc.stderr.strip()[-500:])
    wheels = [name for name in os.listdir(dest_dir) if name.endswith(".whl")]
    if len(wheels) != 1:
        raise ConfigError("building the edgefleet wheel left %r in %s" % (wheels, dest_dir))
    return os.path.join(dest_dir, wheels[0])


def wheel_digest(path):
    """sha256 over a wheel's member names and contents: equal for two builds of the same code,
    whose zip files differ only in timestamps."""
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(path) as wheel:
            for name in sorted(wheel.namelist()):
                h.update(name.encode() + b"\0" + hashlib.sha256(wheel.read(name)).digest())
    except (OSError, zipfile.BadZipFile) as exc:
        raise ConfigError("%s is not a wheel: %s" % (path, exc))
    return h.hexdigest()


# -- the provisioning run ------------------------------------------------------------------------

class Provisioner:
    """One provisioning run over an open Fabric connection; run() returns its StepResults."""

    def __init__(self, conn, board, node_id, broker, key, root="/", node_dir="/opt/edgefleet",
                 python="python3", model_names=None, wheel=None, report=None):
        self.conn = conn
        self.host = conn.host
        self.profile = catalog.load(board)
        if self.profile["runtime"] != "cpython":
            raise ConfigError("board %s runs MicroPython: flash it over its serial port "
                              "(edgefleet flash PORT --board %s)" % (board, board))
        self.node_id = node_id
        self.broker = broker
        self.key = key
        self.root = root
        self.node_dir = posixpath.join(root, node_dir.lstrip("/"))
        self.unit_path = posixpath.join(root, "etc/systemd/system", UNIT_NAME)
        self.python = python
        self.model_names = model_names
        self.wheel = wheel
        self.report = report or (lambda step: None)
        self.user = None
        self.is_root = False
        self.changed_any = False
        self.unit_changed = False

    # -- remote helpers ------------------------------------------------------------------------

    def _run(self, command, step, privileged=False, warn=False):
        if privileged and not self.is_root:
            command = "sudo -n sh -c %s" % shlex.quote(command)
        try:
            result = self.conn.run(command, hide=True, warn=True, in_stream=False)
        except Exception as exc:   # paramiko/socket errors: the SSH link itself failed
            raise ProvisionError("%s: SSH failed during %s: %s" % (self.host, step, exc), self.host, step) from exc
        if result.failed and not warn:
            raise ProvisionError("%s: %s failed (exit %d): %s" % (self.host, step, result.exited,
                                 (result.stderr or result.stdout).strip()[-500:]), self.host, step)
        return result

    def _sha256s(self, paths, step):
        """{path: sha256 hex} of the remote files that exist among `paths`."""
        if not paths:
            return {}
        quoted = " ".join(shlex.quote(p) for p in paths)
        out = self._run("sha256sum -- %s 2>/dev/null; true" % quoted, step).stdout
        found = {}
        for line in out.splitlines():
            digest, _, path = line.partition("  ")
            if path:
                found[path] = digest
        return found

    def _upload(self, data, dest, mode, step, privileged=False):
        """Write bytes to a remote file atomically, with `mode` from the start."""
        staging = posixpath.join(self.node_dir, ".upload-%s" % posixpath.basename(dest))
        self._run("umask 077 && : > %s" % shlex.quote(staging), step)
        try:
            self.conn.put(io.BytesIO(data), remote=staging)
        except Exception as exc:
            raise ProvisionError("%s: uploading %s failed: %s" % (self.host, dest, exc), self.host, step) from exc
        self._run("mkdir -p %s && chmod %o %s && mv -f %s %s" % (
            shlex.quote(posixpath.dirname(dest)), mode, shlex.quote(staging), shlex.quote(staging),
            shlex.quote(dest)), step, privileged)

    def _done(self, name, status, detail):
        step = StepResult(name, status, detail)
        if status == "changed":
            self.changed_any = True
        self.report(step)
        return step

    # -- the steps -----------------------------------------------------------------------------

    def run(self):
        who = self._run("id -un; id -u; hostname", "connect").stdout.split()
        self.user, self.is_root = who[0], who[1] == "0"
        self.node_id = self.node_id or who[2].split(".")[0]
        return [self.step_node_dir(), self.step_venv(), self.step_package(), self.step_image(),
                self.step_unit(), self.step_service()]

    def step_node_dir(self):
        name, nd = "node dir", shlex.quote(self.node_dir)
        if self._run("test -d %s && test -w %s" % (nd, nd), name, warn=True).ok:
            return self._done(name, "unchanged", self.node_dir)
        if not self._run("mkdir -p %s && test -w %s" % (nd, nd), name, warn=True).ok:
            # Under /opt a user needs root to create it, and then owns it.
            self._run("mkdir -p %s && chown %s %s" % (nd, shlex.quote(self.user), nd), name, privileged=True)
        return self._done(name, "changed", "created " + self.node_dir)

    def step_venv(self):
        name = "python venv"
        venv = posixpath.join(self.node_dir, "venv")
        version_out = self._run("%s -c 'import sys; print(\"%%d %%d\" %% sys.version_info[:2])'"
                                % shlex.quote(self.python), name).stdout.split()
        version = (int(version_out[0]), int(version_out[1]))
        requirements = backend_requirements(version)
        vpython = shlex.quote(posixpath.join(venv, "bin", "python"))
        did = []
        if not self._run("test -x %s" % vpython, name, warn=True).ok:
            self._run("%s -m venv %s" % (shlex.quote(self.python), shlex.quote(venv)), name)
            did.append("created with Python %d.%d" % version)
        if not self._run("%s -c %s" % (vpython, shlex.quote(backend_check(version))), name, warn=True).ok:
            self._run("%s -m pip install -q %s" % (vpython, " ".join(shlex.quote(r) for r in requirements)), name)
            did.append("installed " + ", ".join(requirements))
        if did:
            return self._done(name, "changed", "; ".join(did))
        return self._done(name, "unchanged", "Python %d.%d, %s" % (version + (", ".join(requirements),)))

    def step_package(self):
        name = "edgefleet"
        with tempfile.TemporaryDirectory(prefix="edgefleet-wheel-") as tmp:
            wheel = self.wheel or build_wheel(tmp)
            digest = wheel_digest(wheel)
            stamp = posixpath.join(self.node_dir, WHEEL_STAMP)
            vpython = shlex.quote(posixpath.join(self.node_dir, "venv", "bin", "python"))
            current = self._run("cat %s 2>/dev/null; true" % shlex.quote(stamp), name).stdout.strip()
            importable = self._run("%s -c 'import edgefleet.boards.linux_main'" % vpython, name, warn=True).ok
            if current == digest and importable:
                return self._done(name, "unchanged", "%s (contents %s)" % (os.path.basename(wheel), digest[:12]))
            remote_wheel = posixpath.join(self.node_dir, "wheels", os.path.basename(wheel))
            with open(wheel, "rb") as f:
                self._upload(f.read(), remote_wheel, 0o644, name)
        quoted = shlex.quote(remote_wheel)
        # The same version number with new contents must still replace what is installed;
        # the second pip run only adds dependencies that are missing.
        self._run("%s -m pip install -q --force-reinstall --no-deps %s && %s -m pip install -q %s"
                  % (vpython, quoted, vpython, quoted), name)
        self._upload((digest + "\n").encode(), stamp, 0o644, name)
        return self._done(name, "changed", "installed %s (contents %s)" % (os.path.basename(wheel), digest[:12]))

    def image_tree(self, dest):
        host, port = self.broker
        cfg = image.node_config(self.node_id, self.profile, host, port, simulated=False)
        image.write_image(dest, cfg, self.model_names, mpy_arch=None)
        with open(os.path.join(dest, keys.BOARD_FILE), "w") as f:
            f.write(keys.to_board_text(self.key))
        files = []
        for dirpath, dirnames, filenames in os.walk(dest):
            dirnames.sort()
            for filename in sorted(filenames):
                local = os.path.join(dirpath, filename)
                files.append((os.path.relpath(local, dest).replace(os.sep, "/"), local))
        return files

    def step_image(self):
        name = "image files"
        with tempfile.TemporaryDirectory(prefix="edgefleet-image-") as tmp:
            files = self.image_tree(tmp)
            remote = {rel: posixpath.join(self.node_dir, rel) for rel, _ in files}
            have = self._sha256s(sorted(remote.values()), name)
            key_path = remote[keys.BOARD_FILE]
            key_mode = self._run("stat -c %%a %s 2>/dev/null; true" % shlex.quote(key_path), name).stdout.strip()
            written = []
            for rel, local in files:
                with open(local, "rb") as f:
                    data = f.read()
                mode = 0o600 if rel == keys.BOARD_FILE else 0o644
                stale_mode = rel == keys.BOARD_FILE and key_mode != "600"
                if have.get(remote[rel]) != hashlib.sha256(data).hexdigest() or stale_mode:
                    self._upload(data, remote[rel], mode, name)
                    written.append(rel)
        if written:
            return self._done(name, "changed", "wrote " + ", ".join(written))
        return self._done(name, "unchanged", "%d files" % len(files))

    def step_unit(self):
        name = "systemd unit"
        text = render_unit(self.node_id, self.user, self.node_dir).encode()
        have = self._sha256s([self.unit_path], name)
        if have.get(self.unit_path) == hashlib.sha256(text).hexdigest():
            return self._done(name, "unchanged", self.unit_path)
        self._upload(text, self.unit_path, 0o644, name, privileged=True)
        self.unit_changed = True
        return self._done(name, "changed", "wrote " + self.unit_path)

    def step_service(self):
        name = "service"
        if not self._run("test -d /run/systemd/system", name, warn=True).ok:
            return self._done(name, "skipped", "systemd is not running on %s: unit installed, not started" % self.host)
        if self.root != "/":
            return self._done(name, "skipped", "unit installed under --root %s, not started" % self.root)
        unit = UNIT_NAME
        did = []
        if self.unit_changed:
            self._run("systemctl daemon-reload", name, privileged=True)
            did.append("daemon-reload")
        if not self._run("systemctl is-enabled --quiet %s" % unit, name, warn=True).ok:
            self._run("systemctl enable %s" % unit, name, privileged=True)
            did.append("enabled")
        if not self._run("systemctl is-active --quiet %s" % unit, name, warn=True).ok:
            self._run("systemctl start %s" % unit, name, privileged=True)
            did.append("started")
        elif self.changed_any:
            self._run("systemctl restart %s" % unit, name, privileged=True)
            did.append("restarted")
        if did:
            return self._done(name, "changed", ", ".join(did))
        return self._done(name, "unchanged", "%s enabled and active" % unit)


def connect(target, port=None, key_filename=None, timeout=15):
    """A Fabric Connection to USER@HOST[:PORT]."""
    try:
        from fabric import Connection
    except ImportError:
        raise ConfigError("provisioning needs Fabric: pip install fabric")
    connect_kwargs = {"key_filename": key_filename} if key_filename else {}
    return Connection(target, port=port, connect_kwargs=connect_kwargs, connect_timeout=timeout)


def provision(target, board, node_id, broker, port=None, key_filename=None, fleet_key_path=None, report=None,
              **options):
    """Provision the board at USER@HOST; returns the list of StepResults."""
    key = keys.load_or_create(fleet_key_path)
    conn = connect(target, port, key_filename)
    try:
        return Provisioner(conn, board, node_id, broker, key, report=report, **options).run()
    finally:
        conn.close()


def describe(steps):
    """The run's last line: what changed, or that nothing had to."""
    changed = [step.name for step in steps if step.status == "changed"]
    if not changed:
        return "nothing to do: the board was already provisioned"
    return "changed: " + ", ".join(changed)

