"""The fleet operator's commands: `move`, `drain`, `apply`, `export`.

move, drain and apply act through the running controller: they queue a command in the registry
(controller/fleet/commands.py), wait for the controller to take it (it does on every tick) and
print its answer."""
import json
import sys

from ..errors import ConfigError
from .common import add_db, open_registry


def _submit_and_wait(args, op, payload):
    from ..fleet import commands
    registry = open_registry(args)
    try:
        command_id = commands.submit(registry, op, payload)
        state, answer = commands.wait(registry, command_id, args.wait)
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
    from ..fleet import placement
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
    from ..fleet import fleetfile
    manifests = models.manifests()
    workloads = fleetfile.load(args.file, set(manifests))
    registry = open_registry(args, readonly=True)
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
    from ..fleet import fleetfile
    registry = open_registry(args, readonly=True)
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


def register(sub):
    m = add_db(sub.add_parser("move", help="move a workload to a node (make-before-break)"), json_flag=False)
    m.add_argument("workload")
    m.add_argument("node")
    m.add_argument("--from", dest="source", help="the node it leaves, when it runs on several")
    m.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the controller's answer")
    m.set_defaults(func=cmd_move)

    d = add_db(sub.add_parser("drain", help="move every workload off a node, one per cycle"), json_flag=False)
    d.add_argument("node")
    d.add_argument("--undo", action="store_true", help="let the node take work again")
    d.add_argument("--wait", type=float, default=10.0)
    d.set_defaults(func=cmd_drain)

    a = add_db(sub.add_parser("apply", help="show the plan for a fleet file, then have the controller apply it"))
    a.add_argument("file")
    a.add_argument("--dry-run", action="store_true", help="only show the plan")
    a.add_argument("--wait", type=float, default=10.0)
    a.set_defaults(func=cmd_apply)

    e = add_db(sub.add_parser("export", help="write the declared workloads as a fleet file"), json_flag=False)
    e.add_argument("-o", "--output", help="file to write (default: stdout)")
    e.set_defaults(func=cmd_export)
