"""The `edgefleet` command line. Every command's errors are EdgefleetError subclasses, caught
once in main() and printed as `edgefleet: what went wrong`."""
import argparse
import json
import logging
import os
import signal
import sys
import time

from .errors import ConfigError, EdgefleetError, NotFound
from .netutil import parse_hostport


def _registry(args):
    from .registry import Registry, default_path
    path = args.db or default_path()
    if not os.path.exists(path):
        raise ConfigError("no fleet registry at %s (start `edgefleet controller` or `edgefleet demo`, or pass --db)" % path)
    return Registry(path)


def _snapshot_from_registry(registry):
    from .fleet import FleetController
    return FleetController(registry).snapshot()


def cmd_status(args):
    from . import views
    registry = _registry(args)
    try:
        snap = _snapshot_from_registry(registry)
    finally:
        registry.close()
    if args.json:
        print(json.dumps(snap, indent=1))
        return 0
    print(views.nodes_table(snap))
    print()
    print(views.workloads_table(snap))
    return 0


def cmd_events(args):
    registry = _registry(args)
    try:
        events = registry.events(args.node, args.limit)
    finally:
        registry.close()
    if args.json:
        print(json.dumps(events, indent=1))
        return 0
    for ev in events:
        stamp = time.strftime("%H:%M:%S", time.localtime(ev["ts"]))
        print("%s %-5s %-12s %-18s %s" % (stamp, ev["level"], ev["node"] or "-", ev["kind"], ev["msg"]))
    return 0


# What `edgefleet logs` shows of a node unless --all: its boots (with why it reset), its
# children's crashes and hangs, and its supervisor's escalations.
SUPERVISION_KINDS = ("boot", "crash", "hang", "degraded", "safe_mode", "workload_failed",
                     "node_degraded", "node_safe", "node_offline", "node_online", "registered")


def cmd_logs(args):
    registry = _registry(args)
    try:
        if registry.node(args.node) is None:
            raise NotFound("no node %r in the registry at %s" % (args.node, registry.path))
        events = registry.events(args.node, args.limit, None if args.all else SUPERVISION_KINDS)
    finally:
        registry.close()
    if args.json:
        print(json.dumps(events, indent=1))
        return 0
    for ev in events:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ev["ts"]))
        data = ev["data"] or {}
        where = "boot %s" % data["boot"] if "boot" in data else ""
        if ev["kind"] == "boot" and data.get("reset"):
            where = "reset: %s%s" % (data["reset"], " (%s)" % data["reset_detail"] if data.get("reset_detail") else "")
        print("%s %-5s %-16s %s%s" % (stamp, ev["level"], ev["kind"], ev["msg"], "  [%s]" % where if where else ""))
    return 0


def cmd_broker(args):
    from .broker import default_broker
    broker = default_broker(args.port, args.kind).start()
    print("edgefleet: %s broker listening on %s:%d (Ctrl-C stops it)" % (broker.kind, broker.host, broker.port), flush=True)
    try:
        _wait_for_signal()
    finally:
        broker.stop()
    return 0


def cmd_controller(args):
    from edgefleet import models
    from . import fleetfile
    from .service import ControllerService
    host, port = parse_hostport(args.broker)
    manifests = models.manifests()
    workloads = fleetfile.load(args.fleet, set(manifests)) if args.fleet else None
    service = ControllerService(host, port, db_path=args.db, prefix=args.prefix, manifests=manifests,
                                workloads=workloads, ctrl_id=args.id)
    service.start()
    print("edgefleet: controller connected to %s:%d, registry %s" % (host, port, args.db or "default"), flush=True)
    try:
        _wait_for_signal()
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


def cmd_demo(args):
    from .demo import run_demo
    return run_demo(nodes=args.nodes, duration=args.duration, as_json=args.json, broker_kind=args.broker,
                    arm64=args.arm64)


def _wait_for_signal():
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    try:
        while not stop:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


def build_parser():
    p = argparse.ArgumentParser(prog="edgefleet", description="ML inference on fleets of edge boards over MQTT")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run a simulated fleet with an embedded broker and a controller")
    d.add_argument("--nodes", type=int, default=4, help="number of simulated boards (default 4)")
    d.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: until Ctrl-C)")
    d.add_argument("--json", action="store_true", help="print one JSON summary at the end instead of the live view")
    d.add_argument("--broker", choices=("auto", "mosquitto", "amqtt"), default="auto",
                   help="embedded broker: mosquitto when on PATH, else in-process amqtt (default auto)")
    d.add_argument("--arm64", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="add N Pi-class nodes running real aarch64 binaries under qemu-user (default 1)")
    d.set_defaults(func=cmd_demo)

    for name, func, helptext in (("status", cmd_status, "table of nodes and workloads"),
                                 ("events", cmd_events, "the fleet's audit log")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--db", help="registry file (default $EDGEFLEET_HOME/fleet.db)")
        s.add_argument("--json", action="store_true")
        if name == "events":
            s.add_argument("--node", help="only this node's events")
            s.add_argument("--limit", type=int, default=50)
        s.set_defaults(func=func)

    lg = sub.add_parser("logs", help="a node's boots, reset causes, crashes, hangs and escalations")
    lg.add_argument("node", help="node id")
    lg.add_argument("--db", help="registry file (default $EDGEFLEET_HOME/fleet.db)")
    lg.add_argument("--all", action="store_true", help="every event of the node, not only supervision")
    lg.add_argument("--limit", type=int, default=100)
    lg.add_argument("--json", action="store_true")
    lg.set_defaults(func=cmd_logs)

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

    from . import cli_provisioning
    cli_provisioning.register(sub)
    from . import cli_deploy
    cli_deploy.register(sub)
    from . import cli_fleet
    cli_fleet.register(sub)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except EdgefleetError as e:
        print("edgefleet: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
