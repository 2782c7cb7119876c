"""Runs every firmware unit-test module in tests/firmware/ under CPython and real MicroPython.

Each module is executed by tests/firmware/unit.py, which prints one JSON line per test; a module
is collected as one pytest item per runtime, and the failing tests' tracebacks are reported.
"""
import glob
import json
import os

import pytest

from support import interp

from edgefleet.boards import catalog

MODULES = sorted(
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(interp.FIRMWARE_TESTS, "test_*.py"))
)
# MicroPython runs at the heap of every MCU board profile, with the firmware where the board's
# profile puts it (.mpy files loaded into the heap, or executed in place from a ROMFS image,
# docs/ota.md "Code in ROM"), and at one budget tighter than any board's both ways; a change
# that makes the firmware or its tests outgrow a board fails here. (The test modules themselves
# are compiled from source on that heap.) The tight budget sits 8 KB above the lowest heap at
# which test_ota_parts passed here (96 KB): near it the outcome turns on fragmentation, which
# shifts with the length of paths the interpreter interns, so a budget at the edge passes in
# one checkout and fails in another.
TIGHT_HEAP = 104 * 1024
HEAPS = [(p["name"], p["heap_bytes"], p.get("code_store", "files"))
         for p in catalog.all_profiles() if p["runtime"] == "micropython"]
HEAPS += [("tight", TIGHT_HEAP, "files"), ("tight-rom", TIGHT_HEAP, "romfs")]
RUNS = [pytest.param("cpython", None, "files", id="cpython")] + [
    pytest.param("micropython", heap, store, id="micropython-%s" % name, marks=pytest.mark.micropython)
    for name, heap, store in HEAPS
]


@pytest.fixture(scope="session")
def firmware_image(tmp_path_factory):
    return interp.build_mpy_image(str(tmp_path_factory.mktemp("firmware-mpy")))


@pytest.fixture(scope="session")
def firmware_rom(firmware_image):
    """The same .mpy tree as a ROMFS image."""
    from edgefleet.controller.install import romfs
    path = firmware_image.rstrip("/") + ".rom"
    with open(path, "wb") as f:
        f.write(romfs.pack(romfs.tree_files(firmware_image, dirs=("firmware", "boards"))))
    return path


@pytest.mark.parametrize("runtime,heap,store", RUNS)
@pytest.mark.parametrize("module", MODULES)
def test_firmware_module(module, runtime, heap, store, request, firmware_image):
    env = {}
    if module in NEEDS_BROKER:
        broker = request.getfixturevalue("mosquitto")
        env["EDGEFLEET_TEST_BROKER"] = "%s:%d" % (broker.host, broker.port)
    args = [os.path.join(interp.FIRMWARE_TESTS, "unit.py"), module]
    image = firmware_image
    if store == "romfs":
        # Only the image supplies the firmware; the interpreter gets exactly its size more heap.
        rom = request.getfixturevalue("firmware_rom")
        args += ["", rom]
        heap += os.path.getsize(rom)
        image = os.path.dirname(rom)   # a folder without the firmware in it
    proc = interp.run(runtime, args, heap=heap, env=env, image=image)
    results = []
    for line in proc.stdout.splitlines():
        if line.startswith("{") and '"test"' in line:
            results.append(json.loads(line))
    failures = [r for r in results if r["status"] == "fail"]
    report = "\n".join("%s: %s" % (r["test"], r["detail"]) for r in failures)
    assert results, "no tests ran in %s under %s:\n%s\n%s" % (module, runtime, proc.stdout, proc.stderr)
    assert not failures and proc.returncode == 0, "%s under %s:\n%s\n%s" % (module, runtime, report, proc.stderr)


# Modules whose tests talk to a real broker; they read its address from EDGEFLEET_TEST_BROKER.
NEEDS_BROKER = {"test_mqtt", "test_mqtt_wire"}
