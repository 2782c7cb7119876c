"""Commands for the fleet's security material (controller/security/): `init` makes it, `revoke`
takes a node's broker login away (a stolen or retired board), `operator-kit` packs what another
machine needs to operate the fleet and `join` takes such a kit in there."""
import ipaddress
import os
import re

from ..errors import ConfigError

# A DNS name as a certificate may carry it: dot-separated labels of letters, digits and inner
# hyphens, 1-63 characters each.
HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_broker_host(name):
    """ConfigError unless `name` is an IP address or a DNS name (what the broker's certificate names)."""
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        pass
    if len(name) > 253 or not all(HOST_LABEL.match(label) for label in name.rstrip(".").split(".")):
        raise ConfigError("--broker-host %r: not a host name or IP address" % name)
    return name


def cmd_init(args):
    from ..install import keys
    for name in args.broker_host or ():
        check_broker_host(name)
    from ..security import files, pki
    from ..security.material import FleetSecurity
    key_path = keys.default_path()
    had_key = os.path.exists(key_path)
    keys.load_or_create(key_path)
    files.restrict(key_path)   # a key made by an older edgefleet may be world-readable
    # The old HMAC fleet key, if any, is still a secret: it signs the migration bundle (docs/ota.md).
    files.restrict(os.path.join(keys.home(), keys.LEGACY_FILE))
    security = FleetSecurity()
    made = security.init(args.broker_host or (), force=args.force)
    ca = security.ca_pem()
    print("edgefleet: bundle signing key %s (%s)" % (key_path, "kept" if had_key else "created"))
    print("edgefleet: security material in %s (%s)" % (security.dir, ", ".join(made) + " created" if made else "kept"))
    print("  fleet CA      %s" % pki.fingerprint(ca))
    print("  broker cert   %s" % ", ".join(pki.server_names(open(security.broker_cert, "rb").read())))
    print("  logins        %s" % ", ".join("%s (%s)" % (p.name, p.role) for p in security.principals.all()))
    return 0


def cmd_revoke(args):
    from ..errors import NotFound
    from ..security.material import FleetSecurity
    security = FleetSecurity().require()
    if not security.principals.revoke(args.node):
        raise NotFound("no broker login named %r" % args.node)
    print("edgefleet: %s can no longer log in; a running `edgefleet broker` drops it within a second. "
          "Flash or provision the board again to give it a new login." % args.node)
    return 0


def cmd_operator_kit(args):
    from ..install import keys
    from ..netutil import resolve_broker
    from ..security import kit
    from ..security.material import FleetSecurity
    broker = resolve_broker(args.broker)
    public_hex = None
    if os.path.exists(keys.default_path()):
        public_hex = keys.board_text(keys.load()).strip()
    kit.write(args.output, kit.make(broker, FleetSecurity(), public_hex))
    print("edgefleet: operator kit %s (mode 0600): broker %s, the fleet CA, the %s login%s" % (
        args.output, broker.url, kit.OPERATOR_USER, ", the bundle public key" if public_hex else
        "; no signing key here, so no bundle public key: deploy there needs --key"))
    if broker.host in ("127.0.0.1", "localhost", "::1"):
        print("edgefleet: WARNING: %s is this host's loopback address; another machine cannot reach it "
              "(pass --broker mqtts://HOST:PORT with a name in the broker's certificate)" % broker.url)
    print("edgefleet: it holds a broker password: copy it as a secret, then run `edgefleet join %s` there"
          % os.path.basename(args.output))
    return 0


def cmd_join(args):
    from ..install import keys
    from ..netutil import config_path
    from ..security import kit
    taken = kit.read(args.kit)
    written = kit.join(taken, keys.home(), config_path())
    print("edgefleet: joined the fleet at %s as %s" % (taken["broker"], taken["operator"]["name"]))
    for path in written:
        print("  %s" % path)
    return 0


def register(sub):
    i = sub.add_parser("init", help="make the fleet's key, CA, broker certificate and logins "
                                    "(kept when they exist; $EDGEFLEET_HOME/security, mode 0600)")
    i.add_argument("--broker-host", action="append", metavar="NAME",
                   help="a host name or address nodes reach the broker by (repeat; this host's names are always in)")
    i.add_argument("--force", action="store_true",
                   help="make a new CA and new logins: every board must be flashed or provisioned again")
    i.set_defaults(func=cmd_init)

    r = sub.add_parser("revoke", help="take a node's broker login away (a stolen or retired board)")
    r.add_argument("node", help="node id")
    r.set_defaults(func=cmd_revoke)

    k = sub.add_parser("operator-kit", help="write what another machine needs to operate this fleet: the broker, "
                                            "the fleet CA certificate, the operator login, the bundle public key")
    k.add_argument("-o", "--output", required=True, help="kit file to write (mode 0600: it holds a password)")
    k.add_argument("--broker", help="the broker as the operator's machine reaches it (default: as this "
                                    "host's --broker defaults resolve it)")
    k.set_defaults(func=cmd_operator_kit)

    j = sub.add_parser("join", help="set this machine up to operate a fleet from its operator kit: "
                                    "$EDGEFLEET_HOME/security (CA certificate and operator login only), "
                                    "sign.pub, and the broker in the config file")
    j.add_argument("kit", help="file from `edgefleet operator-kit`")
    j.set_defaults(func=cmd_join)
