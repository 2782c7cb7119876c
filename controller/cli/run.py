"""Commands that run a part of the fleet in this process: `demo`, `broker`, `controller`, `node`."""
from ..errors import ConfigError
from ..netutil import parse_broker
from .common import wait_for_signal


def cmd_demo(args):
    from ..sim.demo import run_demo
    return run_demo(nodes=args.nodes, duration=args.duration, as_json=args.json, broker_kind=args.broker,
                    arm64=args.arm64)


def cmd_broker(args):
    from ..broker import default_broker
    broker = default_broker(args.port, args.kind).start()
    print("edgefleet: %s broker listening on %s:%d (Ctrl-C stops it)" % (broker.kind, broker.host, broker.port), flush=True)
    try:
        wait_for_signal()
    finally:
        broker.stop()
    return 0


def cmd_controller(args):
    from edgefleet import models
    from ..fleet import fleetfile
    from ..fleet.service import ControllerService
    host, port = parse_broker(args.broker)
    manifests = models.manifests()
    workloads = fleetfile.load(args.fleet, set(manifests)) if args.fleet else None
    service = ControllerService(host, port, db_path=args.db, prefix=args.prefix, manifests=manifests,
                                workloads=workloads, ctrl_id=args.id)
    service.start()
    print("edgefleet: controller connected to %s:%d, registry %s" % (host, port, args.db or "default"), flush=True)
    try:
        wait_for_signal()
    finally:
        service.stop()
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
    d.add_argument("--nodes", type=int, default=4, help="number of simulated boards (default 4)")
    d.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: until Ctrl-C)")
    d.add_argument("--json", action="store_true", help="print one JSON summary at the end instead of the live view")
    d.add_argument("--broker", choices=("auto", "mosquitto", "amqtt"), default="auto",
                   help="embedded broker: mosquitto when on PATH, else in-process amqtt (default auto)")
    d.add_argument("--arm64", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="add N Pi-class nodes running real aarch64 binaries under qemu-user (default 1)")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("broker", help="run an MQTT broker for a fleet")
    b.add_argument("--port", type=int, default=1883)
    b.add_argument("--kind", choices=("auto", "mosquitto", "amqtt"), default="auto")
    b.set_defaults(func=cmd_broker)

    c = sub.add_parser("controller", help="run the fleet controller")
    c.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT of the MQTT broker")
    c.add_argument("--db", help="registry file (default $EDGEFLEET_HOME/fleet.db)")
    c.add_argument("--fleet", help="fleet file (TOML) declaring workloads")
    c.add_argument("--prefix", default="ef", help="MQTT topic prefix")
    c.add_argument("--id", default="ctrl", help="controller client id")
    c.set_defaults(func=cmd_controller)

    n = sub.add_parser("node", help="run the node runtime on this machine (what a Pi-class board runs)")
    n.add_argument("--config", default="config.json", help="node config file")
    n.add_argument("--config-dir", help="directory holding the config, models and data (the board's SD card)")
    n.set_defaults(func=cmd_node)
