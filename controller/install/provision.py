"""`edgefleet provision USER@HOST --board rpi4`: a Pi-class Linux board set up over SSH (Fabric).

Every step checks the board first and changes only what differs, and reports "changed",
"unchanged" or "skipped"; a second run over an unchanged setup changes nothing and says
"nothing to do". The steps:
0. host key         the SSH connection is opened and the board's host key checked against
                    known_hosts (hostkeys.py) during the handshake, before logging in: an unknown
                    or changed key ends the run before any command runs or any file is uploaded.
1. node directory   ROOT/opt/edgefleet (--dir), created and owned by the SSH user.
2. python venv      NODE_DIR/venv from the board's python3 (--python), with the inference backend
                    its Python has wheels for: tflite-runtime (with numpy<2, which it needs) up to
                    Python 3.11, ai-edge-litert (LiteRT) from 3.12 on.
3. edgefleet        a wheel of this edgefleet (built here from the source tree, or --wheel),
                    uploaded and installed into the venv; re-installed only when the digest of
                    the wheel's contents (names and bytes of its members, so a rebuild of the same
                    code counts as the same) differs from the one stored at the last install.
4. image files      an A/B image (docs/ota.md) as controller/install/image.py's write_slot_set()
                    builds it: the node's code (firmware, boards) and models in a slot with its
                    MANIFEST, and the pointer slots.json, which boards/linux_main.py boots from;
                    plus config.json and the bundle public key (keys.BOARD_FILE). config.json (it
                    will hold the node's MQTT password) and the key are root:GROUP 0640, GROUP
                    being the node service user's group; the slots and the pointer are the SSH
                    user's 0644 (the node runs as that user and rewrites them when it takes an
                    update); the fleet CA root:root 0644. One look at the board (digest, mode,
                    owner of each file) decides which files to install. The code goes into the
                    active slot when that already holds exactly it, else into the other slot (a
                    fresh slot set), and the pointer is written last. Then the other slot and a
                    flat image's models/ (an edgefleet before slots) are removed; the node's state
                    (data/, ota-floor.json) is never touched, so a re-provision keeps it.
5. systemd unit     boards/systemd/edgefleet-node.service filled in, as
                    ROOT/etc/systemd/system/edgefleet-node.service, root:root 0644.
6. service          `systemctl daemon-reload` (when the unit changed), `enable`, and start or
                    restart (when anything changed) -- only where systemd runs (/run/systemd/system
                    exists) and ROOT is /; otherwise the unit is installed and not started, and the
                    step says so.

Files are uploaded into a staging directory of the run's own (mktemp -d, 0700, the SSH user's)
and put in place with `install -o OWNER -g GROUP -m MODE`, so no file ever sits at its place
with other owners or modes, and nobody but the SSH user and root can swap an upload before it is
installed; the staging directory is removed when the run ends, failed or not.

ROOT (--root, default /) prefixes every path written on the board, so tests install into a
folder instead of /opt and /etc. A non-root SSH user gets `sudo -n` for what needs root (the
node directory under /opt, the files given to root, systemctl); installing under / needs root
or passwordless sudo. Under another ROOT an SSH user without either keeps the files it writes
as its own, with the same modes.
"""
import contextlib
import hashlib
import io
import json
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
from edgefleet.firmware import slots

from . import hostkeys, image, keys, nodelink
from ..security.material import FleetSecurity
from ..errors import ConfigError, HostKeyError, ProvisionError, SSHUnreachable
from ..extras import require

UNIT_NAME = "edgefleet-node.service"
UNIT_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(boards_pkg.__file__)), "systemd", UNIT_NAME)
WHEEL_STAMP = "venv/edgefleet-wheel.sha256"
# What a node's venv needs besides edgefleet's own dependencies, by the board's Python.
TFLITE_RUNTIME = ("tflite-runtime>=2.14", "numpy<2")
LITERT = ("ai-edge-litert>=2.3",)
SOURCE_TREE_SKIP = {".git", ".venv", "build", "dist", "tests", "tools", "docs", ".pytest_cache"}
# Who may read what the run installs: a SECRET file only root and the node's service user (its
# group), a SHARED one everybody (owned by root), an OWN one stays the SSH user's (the venv's).
SECRET, SHARED, OWN = "secret", "shared", "own"
MODES = {SECRET: 0o640, SHARED: 0o644, OWN: 0o644}
SECRET_FILES = ("config.json", keys.BOARD_FILE)
# Who the SSH user is on the board, and whether it may act as root (itself, or sudo without a
# password: a run has nobody to type one).
IDENTIFY = ('id -un; id -u; id -gn; hostname; '
            'if [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then echo privileged; else echo unprivileged; fi')
# Which of the arguments exist, one line each.
EXISTING = 'for d in "$@"; do if [ -e "$d" ]; then echo "$d"; fi; done'
# The sha256, mode, owner and group of each existing file among the arguments, one line each.
INSPECT = ('for f in "$@"; do a=$(stat -c %a:%U:%G -- "$f" 2>/dev/null) || continue; '
           'd=$(sha256sum 2>/dev/null <"$f") || d=-; echo "${d%% *} $a $f"; done')


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
    """One provisioning run over a Fabric connection, which its first step opens (checking the
    host's key with `host_check`, a hostkeys.HostKeyCheck); run() returns its StepResults."""

    def __init__(self, conn, host_check, board, node_id, broker, key, root="/", node_dir="/opt/edgefleet",
                 python="python3", model_names=None, wheel=None, report=None, security=None):
        self.conn = conn
        self.host_check = host_check
        self.host = conn.host
        self.profile = catalog.load(board)
        if self.profile["runtime"] != "cpython":
            raise ConfigError("board %s runs MicroPython: flash it over its serial port "
                              "(edgefleet flash PORT --board %s)" % (board, board))
        self.node_id = node_id
        # The node's broker: a URL, BrokerAddress or (host, port); with its own login (and the
        # fleet CA for mqtts://) from `security` (default: the fleet's security folder).
        self.security = security or FleetSecurity()
        self.broker = nodelink.check(self.profile, broker, self.security)
        self.key = key
        self.root = root
        self.node_dir = posixpath.join(root, node_dir.lstrip("/"))
        self.unit_path = posixpath.join(root, "etc/systemd/system", UNIT_NAME)
        self.python = python
        self.model_names = model_names
        self.wheel = wheel
        self.report = report or (lambda step: None)
        self.user = None
        self.group = None       # the SSH user's primary group: the node service runs as that user
        self.is_root = False
        self.privileged = False
        self.staging = None
        self.staged = 0
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

    def _inspect(self, paths, step):
        """{path: (sha256 hex or None where unreadable, "MODE:OWNER:GROUP")} of the remote files
        that exist among `paths`."""
        if not paths:
            return {}
        out = self._run("sh -c %s sh %s" % (shlex.quote(INSPECT), " ".join(shlex.quote(p) for p in paths)),
                        step).stdout
        found = {}
        for line in out.splitlines():
            fields = line.split(" ", 2)
            if len(fields) == 3 and fields[1].count(":") == 2:   # anything else a login script printed
                found[fields[2]] = (None if fields[0] == "-" else fields[0], fields[1])
        return found

    def _placement(self, kind):
        """(mode, owner, group) of a file of `kind`; owner and group are None where the SSH user's
        own will do, or must (it is not root and has no sudo)."""
        if kind == OWN or not self.privileged:
            return MODES[kind], None, None
        return MODES[kind], "root", self.group if kind == SECRET else "root"

    def _in_place(self, found, data, kind):
        """Whether a file _inspect() found (or None) holds `data` with the placement of `kind`."""
        if found is None or found[0] != hashlib.sha256(data).hexdigest():
            return False
        mode, owner, group = found[1].split(":")
        want_mode, want_owner, want_group = self._placement(kind)
        return mode == "%o" % want_mode and want_owner in (None, owner) and want_group in (None, group)

    def _install(self, files, step):
        """Put each (data, dest, kind) of `files` in place with the placement of its kind."""
        if self.staging is None:
            self.staging = self._run("umask 077 && mktemp -d -t edgefleet-provision.XXXXXXXX", step).stdout.strip()
        commands = {False: [], True: []}
        for data, dest, kind in files:
            self.staged += 1
            upload = posixpath.join(self.staging, str(self.staged))
            try:
                self.conn.put(io.BytesIO(data), remote=upload)
            except Exception as exc:
                raise ProvisionError("%s: uploading %s failed: %s" % (self.host, dest, exc), self.host, step) from exc
            mode, owner, group = self._placement(kind)
            install = "install -D -m %o" % mode
            if owner:
                install += " -o %s -g %s" % (shlex.quote(owner), shlex.quote(group))
            commands[owner is not None].append("%s -- %s %s && rm -f -- %s" % (
                install, shlex.quote(upload), shlex.quote(dest), shlex.quote(upload)))
        for privileged, lines in commands.items():
            if lines:
                self._run(" && ".join(lines), step, privileged=privileged)

    def _remove_staging(self):
        if self.staging is not None:
            self._run("rm -rf -- %s" % shlex.quote(self.staging), "cleanup", warn=True)
            self.staging = None

    def _done(self, name, status, detail):
        step = StepResult(name, status, detail)
        if status == "changed":
            self.changed_any = True
        self.report(step)
        return step

    # -- the steps -----------------------------------------------------------------------------

    def run(self):
        steps = [self.step_connect()]
        try:
            steps += [self.step_node_dir(), self.step_venv(), self.step_package(), self.step_image(),
                      self.step_unit(), self.step_service()]
        except BaseException:
            with contextlib.suppress(ProvisionError):   # the failure that got here is the one to report
                self._remove_staging()
            raise
        self._remove_staging()
        return steps

    def step_connect(self):
        name = "host key"
        try:
            self.conn.open()
        except Exception as exc:
            # Fabric only closes a connection that finished opening; a refused host key leaves
            # paramiko's transport running.
            self.conn.client.close()
            if isinstance(exc, HostKeyError):
                raise
            raise SSHUnreachable("%s: SSH failed during connect: %s" % (self.host, exc), self.host, "connect") from exc
        who = self._run(IDENTIFY, "connect").stdout.split()
        self.user, self.is_root, self.group = who[0], who[1] == "0", who[2]
        self.node_id = self.node_id or who[3].split(".")[0]
        self.privileged = who[4] == "privileged"
        if self.root == "/" and not self.privileged:
            raise ProvisionError("%s: %s is not root and cannot use sudo without a password (sudo -n), which "
                                 "installing under / needs" % (self.host, self.user), self.host, "connect")
        status = "changed" if self.host_check.outcome == "recorded" else "unchanged"
        return self._done(name, status, self.host_check.describe())

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
                self._install([(f.read(), remote_wheel, OWN)], name)
        quoted = shlex.quote(remote_wheel)
        # The same version number with new contents must still replace what is installed;
        # the second pip run only adds dependencies that are missing.
        self._run("%s -m pip install -q --force-reinstall --no-deps %s && %s -m pip install -q %s"
                  % (vpython, quoted, vpython, quoted), name)
        self._install([((digest + "\n").encode(), stamp, OWN)], name)
        return self._done(name, "changed", "installed %s (contents %s)" % (os.path.basename(wheel), digest[:12]))

    def image_tree(self, dest, active=None):
        """Write the board's A/B image into `dest`: write_slot_set() (the slot with its code,
        models and MANIFEST, the pointer), config.json, the public key and the link's files.
        Returns the slot the code is in: `active` when the board's active slot already holds
        exactly this code, else the other one (a fresh slot set), or the first on a board
        without slots."""
        link = nodelink.node_link(self.node_id, self.profile, self.broker, security=self.security)
        cfg = image.node_config(self.node_id, self.profile, link.address.host, link.address.port, simulated=False)
        cfg["broker"] = link.config
        cfg["fw"] = image.write_slot_set(dest, self.profile, self.model_names, mpy_arch=None)
        image.write_config(dest, cfg)
        keys.install_public(dest, self.key)
        for name, data in link.files.items():
            with open(os.path.join(dest, name), "wb") as f:
                f.write(data)
        if active not in slots.SLOTS:
            return image.FIRST_SLOT
        image.move_slot(dest, image.FIRST_SLOT, active)
        code = [(rel, local) for rel, local in tree_files(dest) if rel.startswith(active + "/")]
        have = self._inspect([posixpath.join(self.node_dir, rel) for rel, _ in code], "image files")
        if all(self._in_place(have.get(posixpath.join(self.node_dir, rel)), _read(local), OWN) for rel, local in code):
            return active
        image.move_slot(dest, active, slots.other(active))
        return slots.other(active)

    def _active_slot(self):
        """The slot the board's pointer names, or None (no slots yet, or an unreadable pointer)."""
        pointer = self._run("cat -- %s" % shlex.quote(posixpath.join(self.node_dir, slots.POINTER)), "image files",
                            warn=True)
        try:
            active = json.loads(pointer.stdout).get("active") if pointer.ok else None
        except (ValueError, AttributeError):
            return None
        return active if active in slots.SLOTS else None

    def step_image(self):
        name = "image files"
        with tempfile.TemporaryDirectory(prefix="edgefleet-image-") as tmp:
            target = self.image_tree(tmp, self._active_slot())
            files = [(rel, posixpath.join(self.node_dir, rel), _read(local)) for rel, local in tree_files(tmp)]
        have = self._inspect(sorted(dest for _, dest, _ in files), name)
        todo = [(rel, dest, data, _kind(rel)) for rel, dest, data in files]
        todo = [t for t in todo if not self._in_place(have.get(t[1]), t[2], t[3])]
        # The pointer goes after everything else: until it is replaced the board boots what it did.
        done = []
        if todo:
            for batch in ([t for t in todo if t[0] != slots.POINTER], [t for t in todo if t[0] == slots.POINTER]):
                if batch:
                    self._install([(data, dest, kind) for _rel, dest, data, kind in batch], name)
            done.append("wrote " + ", ".join(rel for rel, _, _, _ in todo))
        # What no longer belongs: the other slot, and a flat image's models (from an edgefleet
        # before slots), so the node's state alone is left beside the image.
        stale = [posixpath.join(self.node_dir, d) for d in [slots.other(target)] + list(image.FLAT_DIRS)]
        found = self._run("sh -c %s sh %s" % (shlex.quote(EXISTING), " ".join(shlex.quote(d) for d in stale)), name).stdout
        gone = [line.strip() for line in found.splitlines() if line.strip() in stale]
        if gone:
            self._run("rm -rf -- %s" % " ".join(shlex.quote(d) for d in gone), name, privileged=self.privileged)
            done.append("removed " + ", ".join(posixpath.relpath(d, self.node_dir) + "/" for d in gone))
        if done:
            return self._done(name, "changed", "; ".join(done))
        return self._done(name, "unchanged", "%d files in %s" % (len(files), target))

    def step_unit(self):
        name = "systemd unit"
        text = render_unit(self.node_id, self.user, self.node_dir).encode()
        if self._in_place(self._inspect([self.unit_path], name).get(self.unit_path), text, SHARED):
            return self._done(name, "unchanged", self.unit_path)
        self._install([(text, self.unit_path, SHARED)], name)
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


def tree_files(top):
    """[(path relative to top, local file)] of every file under top, sorted."""
    files = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for filename in sorted(filenames):
            local = os.path.join(dirpath, filename)
            files.append((os.path.relpath(local, top).replace(os.sep, "/"), local))
    return files


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _kind(rel):
    """Who may read an image file: the secrets root and the node's group; the slots and their
    pointer stay the SSH user's, who runs the node, because an update rewrites them (docs/ota.md);
    the rest (the fleet CA) everybody."""
    if rel in SECRET_FILES:
        return SECRET
    if rel == slots.POINTER or rel.split("/", 1)[0] in slots.SLOTS:
        return OWN
    return SHARED


def connect(target, host_check, port=None, key_filename=None, timeout=15):
    """A Fabric Connection to USER@HOST[:PORT] that checks the host's key with `host_check` (a
    hostkeys.HostKeyCheck) when it opens."""
    Connection = require("fabric", "provision").Connection
    connect_kwargs = {"key_filename": key_filename} if key_filename else {}
    conn = Connection(target, port=port, connect_kwargs=connect_kwargs, connect_timeout=timeout)
    host_check.attach(conn)
    return conn


def provision(target, board, node_id, broker, port=None, key_filename=None, fleet_key_path=None, report=None,
              known_hosts=None, trust_on_first_use=False, host_key=None, **options):
    """Provision the board at USER@HOST; returns the list of StepResults.

    The host's key is checked against `known_hosts` (default ~/.ssh/known_hosts): an unknown one is
    recorded there with `trust_on_first_use`, and `host_key` (SHA256:...) pins the one to accept."""
    host_check = hostkeys.HostKeyCheck(known_hosts, trust_on_first_use, host_key)
    nodelink.check(catalog.load(board), broker, options.get("security"))
    key = keys.load_or_create(fleet_key_path)
    conn = connect(target, host_check, port, key_filename)
    try:
        return Provisioner(conn, host_check, board, node_id, broker, key, report=report, **options).run()
    finally:
        conn.close()


def describe(steps):
    """The run's last line: what changed, or that nothing had to."""
    changed = [step.name for step in steps if step.status == "changed"]
    if not changed:
        return "nothing to do: the board was already provisioned"
    return "changed: " + ", ".join(changed)

