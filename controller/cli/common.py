"""What the CLI's command groups share: opening the registry, a fleet snapshot, waiting for a
signal, printing JSON."""
import json
import os
import signal
import time

from ..errors import ConfigError


def open_registry(args, readonly=False):
    """The registry named by --db (default $EDGEFLEET_HOME/fleet.db); it must exist already."""
    from ..store import default_path, open_registry as open_store
    path = getattr(args, "db", None) or default_path()
    if not os.path.exists(path):
        raise ConfigError("no fleet registry at %s (start `edgefleet controller` or `edgefleet demo`, or pass --db)" % path)
    return open_store(path, readonly=readonly)


def fleet_snapshot(registry):
    """The fleet as plain data, read from a registry (no controller needed)."""
    from ..fleet.snapshot import snapshot
    from ..fleet.state import FleetState
    return snapshot(FleetState.load(registry))


def print_json(data):
    print(json.dumps(data, indent=1))


def wait_for_signal():
    """Block until SIGTERM or Ctrl-C."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    try:
        while not stop:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


def add_db(p, json_flag=True):
    p.add_argument("--db", help="registry file (default $EDGEFLEET_HOME/fleet.db)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return p
