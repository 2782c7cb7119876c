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
# MicroPython runs at the heap of every MCU board profile and at one budget tighter than any
# board's, loading the firmware as .mpy the way a board does; a change that makes the firmware
# or its tests outgrow a board fails here.
TIGHT_HEAP = 96 * 1024
HEAPS = [(p["name"], p["heap_bytes"]) for p in catalog.all_profiles() if p["runtime"] == "micropython"]
HEAPS.append(("tight", TIGHT_HEAP))
RUNS = [pytest.param("cpython", None, id="cpython")] + [
    pytest.param("micropython", heap, id="micropython-%s" % name, marks=pytest.mark.micropython) for name, heap in HEAPS
]


@pytest.fixture(scope="session")
def firmware_image(tmp_path_factory):
    return interp.build_mpy_image(str(tmp_path_factory.mktemp("firmware-mpy")))


@pytest.mark.parametrize("runtime,heap", RUNS)
@pytest.mark.parametrize("module", MODULES)
def test_firmware_module(module, runtime, heap, request, firmware_image):
    env = {}
    if module in NEEDS_BROKER:
        broker = request.getfixturevalue("mosquitto")
        env["EDGEFLEET_TEST_BROKER"] = "%s:%d" % (broker.host, broker.port)
    proc = interp.run(runtime, [os.path.join(interp.FIRMWARE_TESTS, "unit.py"), module], heap=heap, env=env,
                      image=firmware_image)
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
