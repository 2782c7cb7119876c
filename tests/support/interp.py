"""Runs code under the real MicroPython unix port or under CPython, for the firmware tests."""
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRMWARE_TESTS = os.path.join(REPO, "tests", "firmware")


def micropython_binary():
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(here):
        return here
    return shutil.which("micropython")


def firmware_path():
    """Search path under which `import firmware` and `import boards` resolve to the repo's code."""
    return [FIRMWARE_TESTS, REPO]


def run(runtime, args, heap="256k", env=None, timeout=120, cwd=None):
    """Run `args` (a script and its arguments) under runtime 'micropython' or 'cpython'."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    paths = firmware_path()
    if runtime == "micropython":
        full_env["MICROPYPATH"] = ":".join(paths + [".frozen"])
        cmd = [micropython_binary(), "-X", "heapsize=%s" % heap] + list(args)
    elif runtime == "cpython":
        full_env["PYTHONPATH"] = os.pathsep.join(paths)
        cmd = [sys.executable] + list(args)
    else:
        raise ValueError(runtime)
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd)
