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


def firmware_path(image=None):
    """Search path under which `import firmware` and `import boards` resolve to the repo's code,
    or to a board image of it (.mpy files) when one is given."""
    return [FIRMWARE_TESTS, image or REPO]


# A board profile wiring every kind of bus sensor: the test image carries all their code.
EVERY_BUS = {"sensors": {"imu": {"i2c": {"sda": 0, "scl": 1}, "driver": "mpu6050"}, "mic": {"i2s": {}}}}


def build_mpy_image(dest):
    """The firmware and MCU board modules compiled to .mpy, as a board's flash holds them (and
    the bus sensors' code a board carries when its profile wires them)."""
    from edgefleet.controller.install import image
    return image.write_mpy_tree(dest, [(src, rel) for src, rel in image.mcu_code_files(profile=EVERY_BUS)
                                       if rel != "main.py"])


def run(runtime, args, heap="256k", env=None, timeout=120, cwd=None, image=None):
    """Run `args` (a script and its arguments) under runtime 'micropython' or 'cpython'."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    paths = firmware_path(image if runtime == "micropython" else None)
    if runtime == "micropython":
        full_env["MICROPYPATH"] = ":".join(paths + [".frozen"])
        cmd = [micropython_binary(), "-X", "heapsize=%s" % heap] + list(args)
    elif runtime == "cpython":
        full_env["PYTHONPATH"] = os.pathsep.join(paths)
        cmd = [sys.executable] + list(args)
    else:
        raise ValueError(runtime)
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd)
