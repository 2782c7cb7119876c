"""The fleet operator's commands: top, move, drain, apply, export, sim.

move, drain and apply act through the running controller: they queue a command in the registry
(controller/commands.py), wait for the controller to take it (it does on every tick) and print
its answer. sim writes a simulated board's sim.json (boards/hal_sim.py reads it), found through
the board index the demo and SimFleet keep ($EDGEFLEET_HOME/simboards.json).
"""
import json
import sys
import time

from .errors import ConfigError, NotFound

SIM_SETTINGS = {
    # name: (sim.json key, parser, help)
    "load": ("load", "percent", "injected CPU load in percent (0-100)"),
    "battery": ("battery_pct", "percent", "battery level in percent (0-100)"),
    "source": ("source", "source", "power source: mains, battery or solar"),
    "temp": ("temp", "number", "temperature in C"),
    "throttle": ("throttled", "onoff", "thermal throttling: on or off"),
    "solar": ("solar_mw", "number", "solar harvest in mW"),
    "time-scale": ("time_scale", "number", "simulated seconds per real second for the power model"),
}


def _registry(args):
    from .cli import _registry as open_registry
    return open_registry(args)


def _parse_sim_value(kind, text):
    if kind == "source":
        if text not in ("mains", "battery", "solar"):
            raise ConfigError("power source must be mains, battery or solar, not %r" % text)
        return text
    if kind == "onoff":
        if text not in ("on", "off"):
            raise ConfigError("throttle takes on or off, not %r" % text)
        return text == "on"
    try:
        value = float(text)
    except ValueError:
        raise ConfigError("%r is not a number" % text) from None
    if kind == "percent" and not 0 <= value <= 100:
        raise ConfigError("%s is not a percentage (0-100)" % text)
    return value


def cmd_sim(args):
    from .simfleet import default_index_path, read_index, write_sim_settings
    key, kind, _ = SIM_SETTINGS[args.setting]
    value = _parse_sim_value(kind, args.value)
    index_path = args.boards or default_index_path()
    index = read_index(index_path)
    if args.node not in index:
        raise NotFound("no simulated board %r in %s (boards: %s)" % (
            args.node, index_path, ", ".join(sorted(index)) or "none; is `edgefleet demo` running?"))
    settings = write_sim_settings(index[args.node], {key: value})
    print("edgefleet: %s sim %s" % (args.node, json.dumps(settings, sort_keys=True)))
    return 0


def _submit_and_wait(args, op, payload):
    from . import commands
    registry = _registry(args)
    try:
        command_id = commands.submit(registry.db, op, payload)
        state, answer = commands.wait(registry.db, command_id, args.wait)
    finally:
        registry.close()
    if state == "pending":
        print("edgefleet: %s queued (command %d); the controller has not taken it within %.0f s" % (op, command_id, args.wait))
        return 0
    if state == "failed":
        raise ConfigError(answer)
    print("edgefleet: %s" % answer)
    return 0


def cmd_move(args):
    payload = {"workload": args.workload, "node": args.node}
    if args.source:
        payload["source"] = args.source
    return _submit_and_wait(args, "move", payload)


def cmd_drain(args):
    return _submit_and_wait(args, "undrain" if args.undo else "drain", {"node": args.node})


def plan_preview(registry, workloads, manifests):
    """What applying `workloads` changes: declared workloads and placements, as plain data."""
    from edgefleet.boards import catalog
    from . import placement
    current = {w["id"]: w for w in registry.workloads()}
    wanted = {w["id"]: w for w in workloads}
    placements = registry.placements()
    profiles = {p["name"]: p for p in catalog.all_profiles()}
    after, pending = placement.plan(workloads, registry.nodes(), placements, profiles, manifests)
    before = set(placements)
    return {
        "add": sorted(set(wanted) - set(current)),
        "change": sorted(w for w in set(wanted) & set(current) if _declared(wanted[w]) != _declared(current[w])),
        "remove": sorted(set(current) - set(wanted)),
        "place": sorted(set(after) - before),
        "unplace": sorted(before - set(after)),
        "pending": pending,
    }


def _declared(wl):
    keys = ("model", "rate", "replicas", "input", "constraints", "resources", "priority")
    return {k: wl.get(k) for k in keys if wl.get(k) not in (None, {}, 0)}


def cmd_apply(args):
    from edgefleet import models
    from . import fleetfile
    manifests = models.manifests()
    workloads = fleetfile.load(args.file, set(manifests))
    registry = _registry(args)
    try:
        preview = plan_preview(registry, workloads, manifests)
    finally:
        registry.close()
    if args.json:
        print(json.dumps({"plan": preview}))
    else:
        print("edgefleet apply %s:" % args.file)
        for label, key in (("add workload", "add"), ("change workload", "change"), ("remove workload", "remove")):
            for wid in preview[key]:
                print("  %-16s %s" % (label, wid))
        for wid, nid in preview["place"]:
            print("  %-16s %s on %s" % ("place", wid, nid))
        for wid, nid in preview["unplace"]:
            print("  %-16s %s from %s" % ("remove", wid, nid))
        for wid, why in sorted(preview["pending"].items()):
            print("  %-16s %s: %s" % ("pending", wid, why))
        if not any(preview[k] for k in ("add", "change", "remove", "place", "unplace")):
            print("  no changes")
    if args.dry_run:
        return 0
    return _submit_and_wait(args, "apply", {"workloads": workloads})


def cmd_export(args):
    from . import fleetfile
    registry = _registry(args)
    try:
        text = fleetfile.dump(registry.workloads())
    finally:
        registry.close()
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        print("edgefleet: wrote %s" % args.output)
    else:
        sys.stdout.write(text)
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
    from .cli import _snapshot_from_registry
    count = 0
    while True:
        registry = _registry(args)
        try:
            snap = _snapshot_from_registry(registry)
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
    """Add the fleet operator's commands to the CLI's subparsers."""
    def with_db(p, json_flag=True):
        p.add_argument("--db", help="registry file (default $EDGEFLEET_HOME/fleet.db)")
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    t = with_db(sub.add_parser("top", help="live refreshing table of nodes, workloads and moves"))
    t.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    t.add_argument("--count", type=int, default=0, help="stop after this many refreshes (default: until Ctrl-C)")
    t.set_defaults(func=cmd_top)

    m = with_db(sub.add_parser("move", help="move a workload to a node (make-before-break)"), json_flag=False)
    m.add_argument("workload")
    m.add_argument("node")
    m.add_argument("--from", dest="source", help="the node it leaves, when it runs on several")
    m.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the controller's answer")
    m.set_defaults(func=cmd_move)

    d = with_db(sub.add_parser("drain", help="move every workload off a node, one per cycle"), json_flag=False)
    d.add_argument("node")
    d.add_argument("--undo", action="store_true", help="let the node take work again")
    d.add_argument("--wait", type=float, default=10.0)
    d.set_defaults(func=cmd_drain)

    a = with_db(sub.add_parser("apply", help="show the plan for a fleet file, then have the controller apply it"))
    a.add_argument("file")
    a.add_argument("--dry-run", action="store_true", help="only show the plan")
    a.add_argument("--wait", type=float, default=10.0)
    a.set_defaults(func=cmd_apply)

    e = with_db(sub.add_parser("export", help="write the declared workloads as a fleet file"), json_flag=False)
    e.add_argument("-o", "--output", help="file to write (default: stdout)")
    e.set_defaults(func=cmd_export)

    s = sub.add_parser("sim", help="change a simulated board: load, battery, power source, temperature")
    s.add_argument("setting", choices=sorted(SIM_SETTINGS), help="; ".join("%s: %s" % (k, v[2]) for k, v in sorted(SIM_SETTINGS.items())))
    s.add_argument("node")
    s.add_argument("value")
    s.add_argument("--boards", help="simulated board index (default $EDGEFLEET_HOME/simboards.json)")
    s.set_defaults(func=cmd_sim)
    return sub
