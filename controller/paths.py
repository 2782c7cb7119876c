"""Where edgefleet keeps its files on the controller host: the one place these are decided.

Follows the XDG base-directory variables:

  state   $EDGEFLEET_HOME, else $XDG_STATE_HOME/edgefleet, else ~/.local/state/edgefleet
          (the registry, the signing key, the security folder, the bundle sequence)
  config  $XDG_CONFIG_HOME/edgefleet, else ~/.config/edgefleet (config.toml)
  cache   $XDG_CACHE_HOME/edgefleet, else ~/.cache/edgefleet (what can be made again: the
          arm64 nodes' root filesystems, controller/sim/arm64.py)
  demo    DEMO_DIR under the state home: `edgefleet demo`'s own registry, CA and board index,
          apart from the user's fleet

XDG says a relative value in these variables is invalid and must be ignored, so it is.
"""
import os

DEMO_DIR = "demo"


def _xdg(variable, fallback):
    value = os.environ.get(variable)
    if value and os.path.isabs(value):
        return value
    return os.path.join(os.path.expanduser("~"), *fallback)


def state_home():
    """The fleet's state folder (not created here)."""
    return os.environ.get("EDGEFLEET_HOME") or os.path.join(_xdg("XDG_STATE_HOME", (".local", "state")), "edgefleet")


def config_home():
    return os.path.join(_xdg("XDG_CONFIG_HOME", (".config",)), "edgefleet")


def cache_home():
    return os.path.join(_xdg("XDG_CACHE_HOME", (".cache",)), "edgefleet")


def config_file():
    return os.path.join(config_home(), "config.toml")


def registry_file():
    return os.path.join(state_home(), "fleet.db")


def demo_home():
    """`edgefleet demo`'s private state: its registry, CA and simulated board index."""
    return os.path.join(state_home(), DEMO_DIR)
