"""An aarch64 CPython for the host: the binaries a Raspberry Pi OS (bookworm) board runs.

Raspberry Pi OS bookworm is Debian 12 arm64 with CPython 3.11, so its own interpreter, numpy and
tflite-runtime run on an x86 host under qemu user-mode emulation with nothing installed system-wide
except qemu-user-static: the Debian .debs are unpacked into a private root (ROOT), the aarch64
wheels into private site directories, and qemu's `-L ROOT` sends the interpreter's absolute-path
lookups (its loader, libc, stdlib) there.

    runtime = ensure_runtime()
    subprocess.run(runtime.python_command(["-c", "import platform; print(platform.machine())"]),
                   env=runtime.env())
    subprocess.Popen(runtime.node_command("config.json"), cwd=flash_dir, env=runtime.env())

The root is built once per recipe and cached (default `$EDGEFLEET_CACHE`, else
`$XDG_CACHE_HOME/edgefleet/arm64`, `~/.cache/edgefleet/arm64` without it); a later call finds the recipe's marker and returns at once.
"""
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

from ..errors import EdgefleetError

# Part of the recipe: bumping it rebuilds every cached root.
RECIPE_VERSION = 1
# What a bookworm arm64 board's python3.11 needs at run time, loader and libc included.
DEBIAN_PACKAGES = (
    "libc6", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "zlib1g",
    "libexpat1", "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libsqlite3-0", "libuuid1",
    "libtirpc3", "libnsl2", "libdb5.3", "libreadline8", "libncursesw6", "libtinfo6", "libgcc-s1",
    "libstdc++6", "libcrypt1",
)
# Raspberry Pi OS takes these from Debian's own arm64 archive; naming the suites here, instead of
# reusing the host's sources, keeps the root the same on any host and skips the host's other repos.
DEBIAN_SOURCES = (
    "http://deb.debian.org/debian bookworm main",
    "http://deb.debian.org/debian bookworm-updates main",
    "http://deb.debian.org/debian-security bookworm-security main",
)
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# tflite-runtime 2.14 (its last release) fails at Interpreter() with numpy 2.
WHEELS = ("numpy==1.26.4", "tflite-runtime==2.14.0")
# LiteRT is used where an aarch64 wheel exists and imports under emulation, and left out otherwise.
OPTIONAL_WHEELS = ("ai-edge-litert",)
WHEEL_PLATFORMS = ("manylinux_2_36_aarch64", "manylinux_2_34_aarch64", "manylinux_2_28_aarch64",
                   "manylinux_2_17_aarch64", "manylinux2014_aarch64")
PYTHON_VERSION = "3.11"
QEMU_BINARIES = ("qemu-aarch64-static", "qemu-aarch64")
QEMU_PACKAGE = "qemu-user-static"
PROJECT_PACKAGES = ("firmware", "boards", "controller", "models")
APT_TIMEOUT_S = 600
PIP_TIMEOUT_S = 600
PROBE_TIMEOUT_S = 180
MARKER = "ready.json"


class Arm64Error(EdgefleetError):
    """The aarch64 runtime could not be built or run."""


class Arm64Unavailable(Arm64Error):
    """qemu user-mode emulation is missing and cannot be installed here (not root, no apt-get)."""


class Arm64DownloadError(Arm64Error):
    """A package or wheel of the recipe could not be downloaded or unpacked."""

    def __init__(self, message, what=None):
        super().__init__(message)
        self.what = what


def recipe():
    """Everything that decides the root's contents; its hash names the cached build."""
    return {
        "version": RECIPE_VERSION, "debs": list(DEBIAN_PACKAGES), "sources": list(DEBIAN_SOURCES),
        "wheels": list(WHEELS), "optional_wheels": list(OPTIONAL_WHEELS),
        "platforms": list(WHEEL_PLATFORMS), "python": PYTHON_VERSION,
    }


def recipe_hash():
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:16]


def default_cache_dir():
    from ..paths import cache_home
    return os.environ.get("EDGEFLEET_CACHE") or os.path.join(cache_home(), "arm64")


def project_dirs():
    """Repository folder of each edgefleet package, from the installed packages themselves."""
    import importlib
    dirs = {}
    for name in PROJECT_PACKAGES:
        module = importlib.import_module("edgefleet." + name)
        dirs[name] = os.path.dirname(os.path.abspath(module.__file__))
    return dirs


def node_main_path():
    """The Linux node's entry module (boards/linux_main.py) of the installed package."""
    return os.path.join(project_dirs()["boards"], "linux_main.py")


class Arm64Runtime:
    """A built root: run its aarch64 python3.11 under qemu with the project importable."""

    def __init__(self, home, qemu, project_path, info):
        self.home = home
        self.qemu = qemu
        self.root = os.path.join(home, "root")
        self.site = os.path.join(home, "site")
        self.project_path = project_path
        self.info = info
        self.optional_sites = [os.path.join(home, d) for d in info.get("optional_sites", [])]

    @property
    def interpreter(self):
        return os.path.join(self.root, "usr", "bin", "python" + PYTHON_VERSION)

    @property
    def launcher(self):
        """The interpreter's sys.executable: a host script that re-enters qemu.

        Without binfmt_misc the host kernel cannot exec an aarch64 binary, so a child the
        emulated interpreter starts with sys.executable (the node's isolated inference
        processes) would fail with ENOEXEC; this script makes that exec land in qemu again.
        """
        return os.path.join(self.root, "usr", "bin", "python%s-qemu" % PYTHON_VERSION)

    def python_path(self, extra_paths=()):
        paths = [self.site] + self.optional_sites + [self.project_path] + [os.fspath(p) for p in extra_paths]
        # An empty entry would put the child's cwd on its path.
        return os.pathsep.join(p for p in paths if p)

    def python_command(self, args, extra_paths=()):
        """argv running the aarch64 interpreter with `args`; works with or without env()."""
        return [self.qemu, "-L", self.root, "-0", self.launcher,
                "-E", "PYTHONPATH=" + self.python_path(extra_paths), "-U", "PYTHONHOME",
                self.interpreter] + list(args)

    def node_command(self, config_path):
        """argv of a Pi-class node agent (what `edgefleet node --config` runs on a board)."""
        entry = node_main_path()
        if not os.path.exists(entry):
            raise Arm64Error("node entry %s is missing" % entry)
        return self.python_command([entry, os.fspath(config_path)])

    def env(self, base=None):
        """Environment for the child: the host's, minus what would steer the aarch64 interpreter
        to the host's Python (a venv's PYTHONHOME, PYTHONPATH), plus qemu's root."""
        env = dict(os.environ if base is None else base)
        for name in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV"):
            env.pop(name, None)
        env["QEMU_LD_PREFIX"] = self.root
        env["PYTHONPATH"] = self.python_path()
        return env

    def run_python(self, args, timeout=PROBE_TIMEOUT_S, extra_paths=(), **kwargs):
        return subprocess.run(self.python_command(args, extra_paths), env=self.env(), timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


# -- building ---------------------------------------------------------------------------------


def _run(argv, what, timeout, cwd=None, error=Arm64DownloadError):
    try:
        proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise error("%s timed out after %d s: %s" % (what, timeout, " ".join(argv)), what)
    except OSError as e:
        raise error("%s could not run %s: %s" % (what, argv[0], e), what)
    if proc.returncode != 0:
        tail = proc.stdout.strip()[-2000:]
        raise error("%s failed (exit %d): %s\n%s" % (what, proc.returncode, " ".join(argv), tail), what)
    return proc.stdout


def find_qemu():
    for name in QEMU_BINARIES:
        path = shutil.which(name) or ("/usr/bin/" + name if os.path.exists("/usr/bin/" + name) else None)
        if path:
            return path
    return None


def ensure_qemu():
    """Path of qemu-aarch64; installs Debian's qemu-user-static when missing and root."""
    path = find_qemu()
    if path:
        return path
    if not shutil.which("apt-get"):
        raise Arm64Unavailable("qemu-aarch64-static is not installed and there is no apt-get to install it")
    if os.geteuid() != 0:
        raise Arm64Unavailable("qemu-aarch64-static is not installed and installing it needs root: "
                               "apt-get install qemu-user-static")
    install = ["apt-get", "install", "-y", "--no-install-recommends", QEMU_PACKAGE]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.run(install, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          timeout=APT_TIMEOUT_S)
    if proc.returncode != 0:
        # A fresh machine has no package lists yet.
        _run(["apt-get", "update"], "apt-get update", APT_TIMEOUT_S, error=Arm64Unavailable)
        proc = subprocess.run(install, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              timeout=APT_TIMEOUT_S)
    path = find_qemu()
    if proc.returncode != 0 or not path:
        raise Arm64Unavailable("installing %s failed (exit %d):\n%s" % (QEMU_PACKAGE, proc.returncode, proc.stdout[-2000:]))
    return path


def _apt_options(state_dir):
    """apt-get options that make it an arm64 downloader with private state: the host's
    architecture config, package lists and caches stay untouched."""
    return [
        "-oAPT::Architecture=arm64", "-oAPT::Architectures=arm64",
        "-oDir::State::Lists=" + os.path.join(state_dir, "lists"),
        "-oDir::State::status=" + os.path.join(state_dir, "status"),
        "-oDir::Cache=" + os.path.join(state_dir, "cache"),
        "-oDir::Etc::SourceList=" + os.path.join(state_dir, "sources.list"),
        "-oDir::Etc::SourceParts=" + os.path.join(state_dir, "sources.list.d"),
        "-oDir::Etc::Preferences=" + os.path.join(state_dir, "preferences"),
        "-oDir::Etc::PreferencesParts=" + os.path.join(state_dir, "preferences.d"),
        "-oAPT::Get::List-Cleanup=0", "-oAcquire::Languages=none",
    # As root, apt downloads as its _apt user, who cannot enter a cache under /root.
    ] + (["-oAPT::Sandbox::User=root"] if os.geteuid() == 0 else [])


def download_debs(dest, state_dir):
    if not shutil.which("apt-get"):
        raise Arm64DownloadError("apt-get is needed to download the Debian arm64 packages", "apt-get")
    if not os.path.exists(DEBIAN_KEYRING):
        raise Arm64DownloadError("%s is missing (Debian's debian-archive-keyring package)" % DEBIAN_KEYRING, "keyring")
    for sub in ("lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
        os.makedirs(os.path.join(state_dir, sub), exist_ok=True)
    open(os.path.join(state_dir, "status"), "w").close()
    with open(os.path.join(state_dir, "sources.list"), "w") as f:
        for line in DEBIAN_SOURCES:
            f.write("deb [arch=arm64 signed-by=%s] %s\n" % (DEBIAN_KEYRING, line))
    options = _apt_options(state_dir)
    _run(["apt-get"] + options + ["update"], "apt-get update (arm64 lists)", APT_TIMEOUT_S)
    os.makedirs(dest, exist_ok=True)
    _run(["apt-get"] + options + ["download"] + list(DEBIAN_PACKAGES),
         "apt-get download of the arm64 packages (%s)" % " ".join(DEBIAN_PACKAGES), APT_TIMEOUT_S, cwd=dest)
    debs = sorted(os.path.join(dest, n) for n in os.listdir(dest) if n.endswith(".deb"))
    if len(debs) < len(DEBIAN_PACKAGES):
        raise Arm64DownloadError("apt-get download gave %d .debs for %d packages" % (len(debs), len(DEBIAN_PACKAGES)), "debs")
    return debs


def unpack_debs(debs, root):
    os.makedirs(root, exist_ok=True)
    for deb in debs:
        _run(["dpkg-deb", "-x", deb, root], "unpacking " + os.path.basename(deb), 120, error=Arm64Error)


def download_wheels(requirements, dest):
    """pip download of aarch64 cp311 wheels (no dependencies: the recipe pins each one)."""
    os.makedirs(dest, exist_ok=True)
    before = set(os.listdir(dest))
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", "cp311", "-d", dest]
    for platform in WHEEL_PLATFORMS:
        argv += ["--platform", platform]
    _run(argv + list(requirements), "pip download of aarch64 wheels (%s)" % " ".join(requirements), PIP_TIMEOUT_S)
    return sorted(os.path.join(dest, n) for n in set(os.listdir(dest)) - before if n.endswith(".whl"))


def unpack_wheel(wheel, site):
    """Install a wheel by unzipping it, as pip would for a pure copy (no scripts needed here)."""
    os.makedirs(site, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    except (zipfile.BadZipFile, OSError) as e:
        raise Arm64DownloadError("cannot unpack %s: %s" % (os.path.basename(wheel), e), os.path.basename(wheel))
    # A wheel's <name>.data/{purelib,platlib} belong in site-packages itself.
    for entry in os.listdir(site):
        if not entry.endswith(".data"):
            continue
        data = os.path.join(site, entry)
        for scheme in ("purelib", "platlib"):
            src = os.path.join(data, scheme)
            if os.path.isdir(src):
                shutil.copytree(src, site, dirs_exist_ok=True)
        shutil.rmtree(data)


def write_launcher(runtime):
    text = '#!/bin/sh\nexec "%s" -L "%s" -0 "$0" "%s" "$@"\n' % (runtime.qemu, runtime.root, runtime.interpreter)
    try:
        with open(runtime.launcher) as f:
            if f.read() == text:
                return
    except OSError:
        pass
    # Replaced by rename: a running node may be exec'ing the old one right now.
    staging = runtime.launcher + ".%d" % os.getpid()
    with open(staging, "w") as f:
        f.write(text)
    os.chmod(staging, 0o755)
    os.rename(staging, runtime.launcher)


def write_project_path(cache_dir):
    """A directory whose edgefleet/ holds a symlink per project folder, so the aarch64
    interpreter imports the checkout as edgefleet.firmware, edgefleet.boards, ... (edgefleet is
    a namespace package); one per checkout, named by the folders' paths."""
    dirs = project_dirs()
    key = hashlib.sha256(json.dumps(dirs, sort_keys=True).encode()).hexdigest()[:12]
    path = os.path.join(cache_dir, "project-" + key)
    if os.path.isdir(os.path.join(path, "edgefleet")):
        return path
    staging = tempfile.mkdtemp(prefix="project-", dir=cache_dir)
    os.mkdir(os.path.join(staging, "edgefleet"))
    for name, target in dirs.items():
        os.symlink(target, os.path.join(staging, "edgefleet", name))
    try:
        os.rename(staging, path)
    except OSError:
        shutil.rmtree(staging)
    return path


def _probe_import(runtime, module_code, extra_paths):
    proc = subprocess.run(runtime.python_command(["-c", module_code], extra_paths), env=runtime.env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=PROBE_TIMEOUT_S)
    return proc.returncode == 0, proc.stdout


def _precompile_stdlib(root):
    """Byte-compile the unpacked stdlib with the host's own 3.11 (same bytecode), sparing every
    emulated start the compile, and sparing parallel first starts a race on writing the .pyc."""
    if sys.version_info[:2] != (3, 11):
        return
    stdlib = os.path.join(root, "usr", "lib", "python" + PYTHON_VERSION)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", stdlib],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)


def _build(home, qemu):
    """Download and unpack everything into `home` (a fresh directory); returns the info dict."""
    started = time.monotonic()
    downloads = os.path.join(home, "downloads")
    debs = download_debs(os.path.join(downloads, "debs"), os.path.join(home, "apt"))
    runtime = Arm64Runtime(home, qemu, "", {})
    unpack_debs(debs, runtime.root)
    if not os.path.exists(runtime.interpreter):
        raise Arm64Error("the unpacked packages hold no %s" % runtime.interpreter)
    wheels = download_wheels(WHEELS, os.path.join(downloads, "wheels"))
    for wheel in wheels:
        unpack_wheel(wheel, runtime.site)
    write_launcher(runtime)
    _precompile_stdlib(runtime.root)
    optional_sites, optional_wheels, skipped = [], [], {}
    for index, requirement in enumerate(OPTIONAL_WHEELS):
        try:
            extra = download_wheels([requirement], os.path.join(downloads, "optional-%d" % index))
        except Arm64DownloadError as e:
            skipped[requirement] = "no aarch64 wheel: " + str(e).splitlines()[0]
            continue
        site_name = "site-optional-%d" % index
        for wheel in extra:
            unpack_wheel(wheel, os.path.join(home, site_name))
        optional_sites.append(site_name)
        optional_wheels.extend(os.path.basename(w) for w in extra)
    for name in list(optional_sites):
        # Keep an optional site only if what it brings imports under emulation.
        ok, output = _probe_import(runtime, "from ai_edge_litert.interpreter import Interpreter",
                                   [runtime.site, os.path.join(home, name)])
        if not ok:
            optional_sites.remove(name)
            shutil.rmtree(os.path.join(home, name))
            last_line = (output.strip().splitlines() or ["no output"])[-1]
            skipped[name] = "does not import under emulation: " + last_line
    download_bytes = 0
    for dirpath, _, filenames in os.walk(downloads):
        download_bytes += sum(os.path.getsize(os.path.join(dirpath, n)) for n in filenames)
    # Everything is unpacked; the archives and apt's arm64 lists would only hold disk.
    shutil.rmtree(os.path.join(home, "apt"), ignore_errors=True)
    shutil.rmtree(downloads, ignore_errors=True)
    return {
        "recipe": recipe_hash(), "recipe_spec": recipe(),
        "debs": [os.path.basename(d) for d in debs],
        "wheels": [os.path.basename(w) for w in wheels] + optional_wheels,
        "optional_sites": optional_sites, "optional_skipped": skipped,
        "download_bytes": download_bytes, "build_seconds": round(time.monotonic() - started, 1),
    }


def _load_marker(home):
    try:
        with open(os.path.join(home, MARKER)) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if info.get("recipe") == recipe_hash() else None


def ensure_runtime(cache_dir=None):
    """The cached aarch64 runtime, built first if this recipe has not been built in cache_dir.

    Raises Arm64Unavailable when qemu is missing and cannot be installed, Arm64DownloadError
    naming what could not be downloaded, Arm64Error for anything else that stops the build.
    """
    cache_dir = os.path.abspath(cache_dir or default_cache_dir())
    os.makedirs(cache_dir, exist_ok=True)
    qemu = ensure_qemu()
    home = os.path.join(cache_dir, recipe_hash())
    info = _load_marker(home)
    if info is None:
        # One builder per cache at a time; the others wait and then find its marker.
        with open(os.path.join(cache_dir, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            info = _load_marker(home)
            if info is None:
                staging = tempfile.mkdtemp(prefix="build-", dir=cache_dir)
                try:
                    info = _build(staging, qemu)
                    # The root is addressed by absolute paths (the launcher, qemu -L), so it is
                    # built where it will live; a failed build leaves no half root behind.
                    shutil.rmtree(home, ignore_errors=True)
                    os.rename(staging, home)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
                with open(os.path.join(home, MARKER), "w") as f:
                    json.dump(info, f, indent=1)
    runtime = Arm64Runtime(home, qemu, write_project_path(cache_dir), info)
    # The launcher names its root, which moved out of the staging dir (and qemu may have moved).
    write_launcher(runtime)
    return runtime
