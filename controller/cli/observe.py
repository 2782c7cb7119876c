"""Commands that look at the fleet: `status`, `events`, `logs`, `top`."""
import json
import sys
import time

from ..errors import NotFound
from .common import add_broker, add_db, fleet_snapshot, open_registry, operator_link, print_json


def cmd_status(args):
    from . import views
    registry = open_registry(args, readonly=True)
    try:
        snap = fleet_snapshot(registry)
    finally:
        registry.close()
    if args.json:
        print_json(snap)
        return 0
    print(views.nodes_table(snap))
    print()
    print(views.workloads_table(snap))
    return 0


def cmd_events(args):
    registry = open_registry(args, readonly=True)
    try:
        events = registry.events(args.node, args.limit)
    finally:
        registry.close()
    if args.json:
        print_json(events)
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
    if args.follow:
        # Live console lines come from the broker, not the registry (controller/cli/follow.py).
        from .follow import follow
        return follow(operator_link(args.broker), args.node, args.prefix, args.json)
    registry = open_registry(args, readonly=True)
    try:
        if registry.node(args.node) is None:
            raise NotFound("no node %r in the registry at %s" % (args.node, registry.path))
        events = registry.events(args.node, args.limit, None if args.all else SUPERVISION_KINDS)
    finally:
        registry.close()
    if args.json:
        print_json(events)
        return 0
    for ev in events:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ev["ts"]))
        data = ev["data"] or {}
        where = "boot %s" % data["boot"] if "boot" in data else ""
        if ev["kind"] == "boot" and data.get("reset"):
            where = "reset: %s%s" % (data["reset"], " (%s)" % data["reset_detail"] if data.get("reset_detail") else "")
        print("%s %-5s %-16s %s%s" % (stamp, ev["level"], ev["kind"], ev["msg"], "  [%s]" % where if where else ""))
    return 0


def render_top(snapshot, events, now=None):
    from . import views
    now = now or time.time()
    lines = ["edgefleet top  %s  %d nodes, %d workloads, %d results" % (
        time.strftime("%H:%M:%S", time.localtime(now)), len(snapshot["nodes"]), len(snapshot["workloads"]),
        snapshot["results_received"]), "", views.nodes_table(snapshot, now), "", views.workloads_table(snapshot)]
    moves = [e for e in events if e["kind"] in ("move_started", "moved", "move_aborted", "placed")]
    if moves:
        lines += ["", "recent placements and moves:"]
        for ev in moves[-6:]:
            lines.append("  %s %-12s %s" % (time.strftime("%H:%M:%S", time.localtime(ev["ts"])), ev["kind"], ev["msg"]))
    return "\n".join(lines)


def cmd_top(args):
    count = 0
    while True:
        registry = open_registry(args, readonly=True)
        try:
            snap = fleet_snapshot(registry)
            events = registry.events(None, 50)
        finally:
            registry.close()
        if args.json:
            print(json.dumps({"snapshot": snap, "events": events[-10:]}), flush=True)
        else:
            clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ("\n" if count else "")
            sys.stdout.write(clear + render_top(snap, events) + "\n")
            sys.stdout.flush()
        count += 1
        if args.count and count >= args.count:
            return 0
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0


def register(sub):
    for name, func, helptext in (("status", cmd_status, "table of nodes and workloads"),
                                 ("events", cmd_events, "the fleet's audit log")):
        s = add_db(sub.add_parser(name, help=helptext))
        if name == "events":
            s.add_argument("--node", help="only this node's events")
            s.add_argument("--limit", type=int, default=50)
        s.set_defaults(func=func)

    lg = add_broker(add_db(sub.add_parser(
        "logs", help="a node's boots, reset causes, crashes, hangs and escalations; --follow: its live console")))
    lg.add_argument("node", help="node id")
    lg.add_argument("-f", "--follow", action="store_true",
                    help="print the node's console lines as it publishes them, until Ctrl-C (reads the broker; "
                         "with --json one `log` message a line)")
    lg.add_argument("--prefix", default="ef", help="MQTT topic prefix (with --follow)")
    lg.add_argument("--all", action="store_true", help="every event of the node, not only supervision")
    lg.add_argument("--limit", type=int, default=100)
    lg.set_defaults(func=cmd_logs)

    t = add_db(sub.add_parser("top", help="live refreshing table of nodes, workloads and moves"))
    t.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    t.add_argument("--count", type=int, default=0, help="stop after this many refreshes (default: until Ctrl-C)")
    t.set_defaults(func=cmd_top)
