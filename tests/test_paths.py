"""Where edgefleet keeps its files (controller/paths.py): the XDG base-directory variables,
$EDGEFLEET_HOME over them, and every user of a path asking that one module."""
import pytest

from edgefleet.controller import netutil, paths
from edgefleet.controller.install import keys
from edgefleet.controller.security.material import FleetSecurity
from edgefleet.controller.sim import arm64, simfleet
from edgefleet.controller.store import default_path


@pytest.fixture
def user(tmp_path, monkeypatch):
    for variable in ("EDGEFLEET_HOME", "EDGEFLEET_CACHE", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_defaults_are_under_home(user):
    assert paths.state_home() == str(user / ".local" / "state" / "edgefleet")
    assert paths.config_file() == str(user / ".config" / "edgefleet" / "config.toml")
    assert arm64.default_cache_dir() == str(user / ".cache" / "edgefleet" / "arm64")


def test_xdg_variables_move_state_config_and_cache(user, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(user / "s"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(user / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(user / "k"))
    assert paths.state_home() == str(user / "s" / "edgefleet")
    assert netutil.config_path() == str(user / "c" / "edgefleet" / "config.toml")
    assert arm64.default_cache_dir() == str(user / "k" / "edgefleet" / "arm64")


def test_a_relative_xdg_value_is_ignored_as_the_spec_says(user, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")
    assert paths.state_home() == str(user / ".local" / "state" / "edgefleet")


def test_edgefleet_home_overrides_state_for_every_user_of_it(user, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(user / "s"))
    monkeypatch.setenv("EDGEFLEET_HOME", str(user / "fleet"))
    home = user / "fleet"
    assert default_path() == str(home / "fleet.db")
    assert keys.default_path() == str(home / "signing.key")
    assert FleetSecurity().dir == str(home / "security")
    assert paths.demo_home() == str(home / "demo")
    assert simfleet.default_index_path() == str(home / "demo" / "simboards.json")
