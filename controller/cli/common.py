"""What the CLI's command groups share: asking the running controller over the broker, opening
the registry (--db), a fleet snapshot, waiting for a signal, printing JSON."""
import json
import os
import signal
import time

from ..errors import ConfigError


def open_registry(args, readonly=False):
    """The registry named by --db (default $EDGEFLEET_HOME/fleet.db, or a postgresql:// URL); a
    file must exist already."""
    from ..store import default_path, open_registry as open_store
    from ..store.postgres import is_postgres_url
    path = getattr(args, "db", None) or default_path()
    if not is_postgres_url(path) and not os.path.exists(path):
        raise ConfigError("no fleet registry at %s (start `edgefleet controller` or `edgefleet demo`, or pass --db)" % path)
    return open_store(path, readonly=readonly)


def fleet_snapshot(registry):
    """The fleet as plain data, read from a registry (no controller needed)."""
    from ..fleet.snapshot import snapshot
    from ..fleet.state import FleetState
    return snapshot(FleetState.load(registry))


def print_json(data):
    print(json.dumps(data, indent=1))


def wait_for_signal(alive=None):
    """Block until SIGTERM or Ctrl-C, or until alive() turns false."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    try:
        while not stop and (alive is None or alive()):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


def add_remote(p, local_db=True, json_flag=True):
    """Options of a command that asks the running controller over the broker; with local_db, a
    read-only one that can read a registry file instead (--db)."""
    add_broker(p)
    p.add_argument("--wait", type=float, default=10.0,
                   help="seconds to wait for the controller's answer (default 10)")
    p.add_argument("--prefix", default="ef", help="MQTT topic prefix")
    if local_db:
        p.add_argument("--db", help="read this registry file directly instead of asking the controller "
                                    "(offline inspection on the controller's host)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def controller_link(args):
    """A ControllerLink (controller/oprequest.py) as the operator, for --broker, --prefix, --wait;
    a context manager that connects."""
    from ..oprequest import ControllerLink
    return ControllerLink(operator_link(args.broker), args.prefix, args.wait)


def ask(args, op, request_args=None):
    """The running controller's answer to one operator request."""
    with controller_link(args) as ctrl:
        return ctrl.ask(op, request_args)


BROKER_HELP = ("the fleet's broker: mqtts://[USER@]HOST[:8883] (TLS, verified against the fleet CA) or "
               "mqtt://HOST[:PORT] (default: $EDGEFLEET_BROKER, else `broker` in $XDG_CONFIG_HOME/edgefleet/"
               "config.toml, else mqtts://127.0.0.1:8883)")


def add_broker(p):
    p.add_argument("--broker", help=BROKER_HELP)
    return p


def broker_link(given, role):
    """A BrokerLink for --broker (or its defaults) as `role` (controller/security/principals.py)."""
    from ..mqttlink import BrokerLink
    from ..netutil import resolve_broker
    return BrokerLink(resolve_broker(given), role)


def operator_link(given):
    from ..security.principals import OPERATOR
    return broker_link(given, OPERATOR)
