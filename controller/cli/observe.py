"""Commands that look at the fleet: `status`, `events`, `logs`, `top`.

Each asks the running controller over the broker (controller/oprequest.py), or with --db reads
a registry file directly (offline, on the controller's host)."""
import json
import signal
import sys
import time

from ..errors import NotFound
from ..fleet.operator import SUPERVISION_KINDS
from .common import add_remote, ask, controller_link, fleet_snapshot, open_registry, operator_link, print_json


def _local_snapshot(args):
    registry = open_registry(args, readonly=True)
    try:
        return fleet_snapshot(registry)
    finally:
        registry.close()


def _local_events(args, node, limit, kinds=None, must_exist=False):
    registry = open_registry(args, readonly=True)
    try:
        if must_exist and registry.node(node) is None:
            raise NotFound("no node %r in the registry at %s" % (node, registry.path))
        return registry.events(node, limit, kinds)
    finally:
        registry.close()


def cmd_status(args):
    from . import views
    snap = _local_snapshot(args) if args.db else ask(args, "status")
    if args.json:
        print_json(snap)
        return 0
    print(views.nodes_table(snap))
    print()
    print(views.workloads_table(snap))
    return 0


def _event_line(ev):
    stamp = time.strftime("%H:%M:%S", time.localtime(ev["ts"]))
    return "%s %-5s %-12s %-18s %s" % (stamp, ev["level"], ev["node"] or "-", ev["kind"], ev["msg"])


def _print_event(ev, as_json):
    print(json.dumps(ev) if as_json else _event_line(ev), flush=True)


def cmd_events(args):
    if args.follow:
        return _follow_events(args)
    if args.db:
        events = _local_events(args, args.node, args.limit)
    else:
        events = ask(args, "events", _events_args(args))["events"]
    if args.json:
        print_json(events)
        return 0
    for ev in events:
        print(_event_line(ev))
    return 0


def _events_args(args):
    request = {"limit": args.limit}
    if args.node:
        request["node"] = args.node
    return request


def _follow_events(args):
    """The last events, then each new one as the controller records it (one JSON object a line
    with --json), until Ctrl-C or SIGTERM."""
    from ..errors import ConfigError
    if args.db:
        raise ConfigError("--follow asks the running controller; it cannot follow a registry file (--db)")
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    with controller_link(args) as ctrl:
        ctrl.follow_audit()   # before asking for the recent ones: nothing falls between the two
        recent = ctrl.ask("events", _events_args(args))["events"]
        for ev in recent:
            _print_event(ev, args.json)
        seen = {(ev["ts"], ev["kind"], ev["msg"]) for ev in recent}
        try:
            while not stop:
                for ev in ctrl.audit_events(0.2):
                    key = (ev.get("ts"), ev.get("kind"), ev.get("msg"))
                    if key in seen or (args.node and ev.get("node") != args.node):
                        continue
                    seen.add(key)
                    _print_event(ev, args.json)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_logs(args):
    if args.follow:
        # Live console lines come from the broker, not the registry (controller/cli/follow.py).
        from .follow import follow
        return follow(operator_link(args.broker), args.node, args.prefix, args.json)
    if args.db:
        events = _local_events(args, args.node, args.limit, None if args.all else SUPERVISION_KINDS, must_exist=True)
    else:
        events = ask(args, "logs", {"node": args.node, "limit": args.limit, "all": args.all})["events"]
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
    if args.db:
        return _top(args, lambda: (_local_snapshot(args), _local_events(args, None, 50)))
    with controller_link(args) as ctrl:
        return _top(args, lambda: (ctrl.ask("status"), ctrl.ask("events", {"limit": 50})["events"]))


def _top(args, read):
    count = 0
    while True:
        snap, events = read()
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
    s = add_remote(sub.add_parser("status", help="table of nodes and workloads"))
    s.set_defaults(func=cmd_status)

    e = add_remote(sub.add_parser("events", help="the fleet's audit log"))
    e.add_argument("--node", help="only this node's events")
    e.add_argument("--limit", type=int, default=50, help="how many of the last events (default 50, at most 1000)")
    e.add_argument("--follow", action="store_true",
                   help="then print each new event as the controller records it, until Ctrl-C")
    e.set_defaults(func=cmd_events)

    lg = add_remote(sub.add_parser(
        "logs", help="a node's boots, reset causes, crashes, hangs and escalations; --follow: its live console"))
    lg.add_argument("node", help="node id")
    lg.add_argument("-f", "--follow", action="store_true",
                    help="print the node's console lines as it publishes them, until Ctrl-C (reads the broker; "
                         "with --json one `log` message a line)")
    lg.add_argument("--all", action="store_true", help="every event of the node, not only supervision")
    lg.add_argument("--limit", type=int, default=100)
    lg.set_defaults(func=cmd_logs)

    t = add_remote(sub.add_parser("top", help="live refreshing table of nodes, workloads and moves"))
    t.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    t.add_argument("--count", type=int, default=0, help="stop after this many refreshes (default: until Ctrl-C)")
    t.set_defaults(func=cmd_top)
