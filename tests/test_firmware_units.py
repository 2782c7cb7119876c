"""Runs every firmware unit-test module in tests/firmware/ under CPython and real MicroPython.

Each module is executed by tests/firmware/unit.py, which prints one JSON line per test; a module
is collected as one pytest item per runtime, and the failing tests' tracebacks are reported.
"""
import glob
import json
import os

import pytest

from support import interp

MODULES = sorted(
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(interp.FIRMWARE_TESTS, "test_*.py"))
)
# The smallest heap of any MCU board profile is what the firmware must live in.
MPY_HEAP = os.environ.get("EDGEFLEET_TEST_HEAP", "256k")


@pytest.mark.parametrize("runtime", ["cpython", pytest.param("micropython", marks=pytest.mark.micropython)])
@pytest.mark.parametrize("module", MODULES)
def test_firmware_module(module, runtime, request):
    env = {}
    if "mosquitto" in request.fixturenames or module in NEEDS_BROKER:
        broker = request.getfixturevalue("mosquitto")
        env["EDGEFLEET_TEST_BROKER"] = "%s:%d" % (broker.host, broker.port)
    proc = interp.run(runtime, [os.path.join(interp.FIRMWARE_TESTS, "unit.py"), module], heap=MPY_HEAP, env=env)
    results = []
    for line in proc.stdout.splitlines():
        if line.startswith("{") and '"test"' in line:
            results.append(json.loads(line))
    failures = [r for r in results if r["status"] == "fail"]
    report = "\n".join("%s: %s" % (r["test"], r["detail"]) for r in failures)
    assert results, "no tests ran in %s under %s:\n%s\n%s" % (module, runtime, proc.stdout, proc.stderr)
    assert not failures and proc.returncode == 0, "%s under %s:\n%s\n%s" % (module, runtime, report, proc.stderr)


# Modules whose tests talk to a real broker; they read its address from EDGEFLEET_TEST_BROKER.
NEEDS_BROKER = {"test_mqtt"}
