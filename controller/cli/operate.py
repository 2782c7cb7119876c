"""The fleet operator's commands: `move`, `drain`, `apply`, `export`.

Each asks the running controller over the broker as the operator (controller/oprequest.py,
docs/protocol.md "Operator requests") and prints its answer; the controller acts from its own
thread (controller/fleet/operator.py). `export --db` reads a registry file instead."""
import json
import sys

from .common import add_remote, ask, controller_link, open_registry


def _act(args, op, request_args):
    print("edgefleet: %s" % ask(args, op, request_args)["message"])
    return 0


def cmd_move(args):
    payload = {"workload": args.workload, "node": args.node}
    if args.source:
        payload["source"] = args.source
    return _act(args, "move", payload)


def cmd_drain(args):
    return _act(args, "undrain" if args.undo else "drain", {"node": args.node})


def cmd_apply(args):
    from edgefleet import models
    from ..fleet import fleetfile
    workloads = fleetfile.load(args.file, models.manifests())
    with controller_link(args) as ctrl:
        preview = ctrl.ask("plan", {"workloads": workloads})["plan"]
        if args.json:
            print(json.dumps({"plan": preview}))
        else:
            _print_plan(args.file, preview)
        if args.dry_run:
            return 0
        print("edgefleet: %s" % ctrl.ask("apply", {"workloads": workloads})["message"])
    return 0


def _print_plan(path, preview):
    print("edgefleet apply %s:" % path)
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


def cmd_export(args):
    from ..fleet import fleetfile
    if args.db:
        registry = open_registry(args, readonly=True)
        try:
            text = fleetfile.dump(registry.workloads())
        finally:
            registry.close()
    else:
        text = ask(args, "export")["text"]
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        print("edgefleet: wrote %s" % args.output)
    else:
        sys.stdout.write(text)
    return 0


def register(sub):
    m = add_remote(sub.add_parser("move", help="move a workload to a node (make-before-break)"), local_db=False,
                   json_flag=False)
    m.add_argument("workload")
    m.add_argument("node")
    m.add_argument("--from", dest="source", help="the node it leaves, when it runs on several")
    m.set_defaults(func=cmd_move)

    d = add_remote(sub.add_parser("drain", help="move every workload off a node, one per cycle"), local_db=False,
                   json_flag=False)
    d.add_argument("node")
    d.add_argument("--undo", action="store_true", help="let the node take work again")
    d.set_defaults(func=cmd_drain)

    a = add_remote(sub.add_parser("apply", help="show the plan for a fleet file, then have the controller apply it"),
                   local_db=False)
    a.add_argument("file")
    a.add_argument("--dry-run", action="store_true", help="only show the plan")
    a.set_defaults(func=cmd_apply)

    e = add_remote(sub.add_parser("export", help="write the declared workloads as a fleet file"), json_flag=False)
    e.add_argument("-o", "--output", help="file to write (default: stdout)")
    e.set_defaults(func=cmd_export)
