"""Commands that run a part of the fleet in this process: `demo`, `broker`, `controller`, `node`."""
import contextlib
import os
import socket

from ..errors import ConfigError
from .argtypes import non_negative_int, port_number, positive_float, positive_int
from ..fleet.retention import DEFAULT_KEEP_DAYS, DEFAULT_KEEP_RESULTS
from .common import add_broker, broker_link, wait_for_signal


def cmd_demo(args):
    from ..sim.demo import run_demo
    return run_demo(nodes=args.nodes, duration=args.duration, as_json=args.json, broker_kind=args.broker,
                    arm64=args.arm64, insecure_plaintext=args.insecure_plaintext, http=args.http)


def check_bind_address(address):
    """ConfigError unless this host can listen on `address` (binding a port the system picks)."""
    try:
        infos = socket.getaddrinfo(address, 0, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.bind(infos[0][4])
    except (OSError, UnicodeError) as e:
        raise ConfigError("--bind %s: not an address this host can listen on (%s)" % (address, e)) from None


def cmd_broker(args):
    check_bind_address(args.bind)
    if args.kind == "amqtt":
        return _open_broker(args)
    from ..broker import DYNSEC_PLUGIN, SecureMosquitto, dynsec_plugin, mosquitto_binary
    from ..security.material import FleetSecurity
    # Before the security material is made for it: a broker that cannot run needs none.
    if mosquitto_binary() is None:
        raise ConfigError("the broker needs mosquitto: apt-get install mosquitto (or `--kind amqtt` for an "
                          "open test-bench broker)")
    if dynsec_plugin() is None:
        raise ConfigError("the broker needs mosquitto's dynamic-security plugin (%s)" % DYNSEC_PLUGIN)
    security = FleetSecurity()
    if not security.exists():
        made = security.init([args.bind])
        print("edgefleet: no fleet security material yet: made %s in %s" % (", ".join(made), security.dir), flush=True)
    plain_port = args.insecure_plaintext
    broker = SecureMosquitto(security, host=args.bind, port=args.port, plain_port=plain_port, on_sync=_report_sync).start()
    print("edgefleet: broker listening on %s:%d (TLS, fleet logins and ACLs)" % (args.bind, broker.port), flush=True)
    if plain_port:
        print("edgefleet: WARNING: plaintext listener on %s:%d: logins and ACLs apply, but anyone on the "
              "network can read what crosses it (docs/security.md)" % (args.bind, plain_port), flush=True)
    print("edgefleet: Ctrl-C stops it", flush=True)
    try:
        wait_for_signal()
    finally:
        broker.stop()
    return 0


def _report_sync(outcome):
    """The broker's login changes as they are applied (a board flashed, one revoked)."""
    if isinstance(outcome, Exception):
        print("edgefleet: broker: could not apply login changes: %s" % outcome, flush=True)
        return
    for command in outcome:
        if command["command"] in ("createClient", "deleteClient", "setClientPassword"):
            print("edgefleet: broker: %s %s" % (command["command"], command["username"]), flush=True)


def _open_broker(args):
    from ..broker import EmbeddedBroker
    broker = EmbeddedBroker(args.insecure_plaintext or 1883, host=args.bind).start()
    print("edgefleet: WARNING: amqtt broker on %s:%d is OPEN: no TLS, no logins, no ACLs; anyone who can "
          "reach it owns the fleet. Use it on a test bench only (Ctrl-C stops it)." % (broker.host, broker.port),
          flush=True)
    try:
        wait_for_signal()
    finally:
        broker.stop()
    return 0


@contextlib.contextmanager
def removed_on_failure(path):
    """Run the body; if it raises, remove what it created of `path`, its SQLite companions
    (-wal, -shm, -journal) and the folders above it that did not exist: a controller that
    failed to start leaves no registry behind to be mistaken for a fleet."""
    files = [path + suffix for suffix in ("", "-wal", "-shm", "-journal")]
    new_files = [f for f in files if not os.path.exists(f)]
    new_dirs = []
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        new_dirs.append(folder)          # deepest first
        folder = os.path.dirname(folder)
    try:
        yield
    except BaseException:
        for f in new_files:
            if os.path.exists(f):
                os.remove(f)
        for d in new_dirs:
            try:
                os.rmdir(d)
            except OSError:              # something else put a file there meanwhile: keep it
                break
        raise


def cmd_controller(args):
    from edgefleet import models
    from ..fleet import fleetfile
    from ..fleet.service import ControllerService
    from ..security.principals import CONTROLLER
    from ..fleet.retention import RetentionPolicy
    from ..store import default_path
    from ..store.postgres import is_postgres_url, redacted
    link = broker_link(args.broker, CONTROLLER)
    manifests = models.manifests()
    workloads = fleetfile.load(args.fleet, manifests) if args.fleet else None
    db_path = args.db or default_path()
    retention = RetentionPolicy(args.keep_days, args.keep_results)
    postgres = is_postgres_url(db_path)
    if args.shared and not postgres:
        raise ConfigError("--shared needs a registry every replica reaches: --db postgresql://...")
    ctrl_id = args.id or ("ctrl-%s-%d" % (socket.gethostname(), os.getpid()) if args.shared else "ctrl")
    dashboard = None
    if args.http:
        from ..dashboard.server import dashboard_for
        dashboard = dashboard_for(args.http, link.security, prefix=args.prefix).bind()
    service = ControllerService(None, None, db_path=db_path, prefix=args.prefix, manifests=manifests,
                                workloads=workloads, ctrl_id=ctrl_id, link=link, retention=retention,
                                shared=args.shared, observer=dashboard.feed if dashboard else None)
    try:
        with contextlib.nullcontext() if postgres else removed_on_failure(db_path):
            service.start()
    except BaseException:
        if dashboard is not None:
            dashboard.stop()
        raise
    print("edgefleet: controller connected to %s, registry %s" % (
        link.describe(), redacted(db_path) if postgres else db_path), flush=True)
    try:
        if dashboard is not None:
            dashboard.start(service)
            print("edgefleet: dashboard at %s (actions need %s)" % (dashboard.url, dashboard.credentials.where),
                  flush=True)
        wait_for_signal(service.alive)
    finally:
        if dashboard is not None:
            dashboard.stop()
        service.stop()   # raises ControllerFailed (an operation's exit status) if the loop died
    return 0


def cmd_node(args):
    from edgefleet.boards import linux_main
    from edgefleet.firmware.errors import FirmwareError
    try:
        linux_main.run(args.config, args.config_dir)
    except FirmwareError as e:
        raise ConfigError(str(e)) from e
    return 0


def register(sub):
    d = sub.add_parser("demo", help="run a simulated fleet with an embedded broker and a controller")
    d.add_argument("--nodes", type=positive_int, default=4, help="number of simulated boards (default 4)")
    d.add_argument("--duration", type=positive_float, default=None, help="stop after this many seconds (default: until Ctrl-C)")
    d.add_argument("--json", action="store_true", help="print one JSON summary at the end instead of the live view")
    d.add_argument("--broker", choices=("auto", "mosquitto", "amqtt"), default="auto",
                   help="embedded broker: mosquitto when on PATH, else in-process amqtt (default auto)")
    d.add_argument("--arm64", type=non_negative_int, nargs="?", const=1, default=0, metavar="N",
                   help="add N Pi-class nodes running real aarch64 binaries under qemu-user (default 1)")
    d.add_argument("--insecure-plaintext", action="store_true",
                   help="also open an authenticated plaintext listener, so boards that cannot hold TLS "
                        "(the ESP32) join the demo unencrypted")
    d.add_argument("--http", metavar="ADDR:PORT",
                   help="also serve the live dashboard here (e.g. 127.0.0.1:8080; `make demo` does)")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("broker", help="run the fleet's MQTT broker: mosquitto with TLS, fleet logins and ACLs")
    b.add_argument("--bind", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for boards on the network)")
    b.add_argument("--port", type=port_number, default=8883, help="TLS port (default 8883)")
    b.add_argument("--insecure-plaintext", type=port_number, nargs="?", const=1883, default=None, metavar="PORT",
                   help="also listen in plaintext on PORT (default 1883), for boards that cannot hold TLS: "
                        "logins and ACLs apply, encryption does not (docs/security.md)")
    b.add_argument("--kind", choices=("mosquitto", "amqtt"), default="mosquitto",
                   help="amqtt: an OPEN in-process broker for a test bench (no TLS, logins or ACLs)")
    b.set_defaults(func=cmd_broker)

    c = sub.add_parser("controller", help="run the fleet controller")
    add_broker(c)
    c.add_argument("--db", help="registry: a file (default $EDGEFLEET_HOME/fleet.db) or a postgresql:// URL "
                                "(replicas, big fleets: docs/scale.md)")
    c.add_argument("--keep-days", type=positive_float, default=DEFAULT_KEEP_DAYS,
                   help="keep results this many days (default %g); older ones are pruned in the background"
                        % DEFAULT_KEEP_DAYS)
    c.add_argument("--keep-results", type=positive_int, default=DEFAULT_KEEP_RESULTS,
                   help="keep at most this many results, the newest (default %d)" % DEFAULT_KEEP_RESULTS)
    c.add_argument("--fleet", help="fleet file (TOML) declaring workloads")
    c.add_argument("--prefix", default="ef", help="MQTT topic prefix")
    c.add_argument("--id", help="controller client id (default ctrl; with --shared, one per replica from "
                                "the host name and process id)")
    c.add_argument("--shared", metavar="GROUP",
                   help="run as one of a group of controller replicas: ingest shared through the broker's "
                        "MQTT 5 shared subscription, one leader elected through the PostgreSQL registry "
                        "(docs/scale.md)")
    c.add_argument("--http", metavar="ADDR:PORT",
                   help="also serve the live dashboard and /metrics here (e.g. 127.0.0.1:8080; actions need "
                        "the operator login)")
    c.set_defaults(func=cmd_controller)

    n = sub.add_parser("node", help="run the node runtime on this machine (what a Pi-class board runs)")
    n.add_argument("--config", default="config.json", help="node config file")
    n.add_argument("--config-dir", help="directory holding the config, models and data (the board's SD card)")
    n.set_defaults(func=cmd_node)
