"""Commands for the fleet's security material (controller/security/): `init` makes it, `revoke`
takes a node's broker login away (a stolen or retired board)."""
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
