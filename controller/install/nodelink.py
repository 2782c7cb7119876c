"""What a board needs to reach the fleet's broker, decided once for `flash`, `provision` and the
simulated fleets: the broker settings of its config.json (address, TLS, its own login) and the
files that go next to it (the fleet CA).

A board whose profile cannot hold TLS beside a model is refused an mqtts:// broker with the
reason; it can still be given an mqtt:// address, which only works against a plaintext
listener the operator opened on purpose (`edgefleet broker --insecure-plaintext`).
"""
from ..errors import SecurityError
from ..netutil import BrokerAddress
from ..security.material import FleetSecurity
from . import image


def as_address(broker):
    """A BrokerAddress from a URL, a BrokerAddress, or a (host, port) pair (plaintext)."""
    if broker is None or isinstance(broker, BrokerAddress):
        return broker
    if isinstance(broker, str):
        return BrokerAddress.parse(broker)
    host, port = broker
    return BrokerAddress("mqtt", host, int(port))


def tls_fits(profile):
    """(whether the board can hold TLS beside a model, why not)."""
    tls = profile.get("tls") or {}
    if tls.get("fits", True):
        return True, None
    return False, tls.get("why") or "its heap cannot hold a TLS session beside a model"


class NodeLink:
    """A node's broker settings: `config` for config.json's "broker", `files` {name: bytes}."""

    def __init__(self, config, files, address):
        self.config = config
        self.files = files
        self.address = address


def check(profile, broker, security=None):
    """Refuse, before anything touches a board, a link it could not use: SecurityError for an
    mqtts:// broker on a board that cannot hold TLS, or without the fleet CA. Returns the address."""
    address = as_address(broker)
    if address.tls:
        fits, why = tls_fits(profile)
        if not fits:
            raise SecurityError("%s cannot talk TLS: %s. Give it an mqtt:// broker address on a plaintext "
                                "listener opened with `edgefleet broker --insecure-plaintext` (logins and "
                                "ACLs still apply; the link is not encrypted)" % (profile["name"], why))
        security = (security or FleetSecurity()).require()
        names = security.broker_names()
        if names and address.host not in names:
            # The board would verify the broker as this name and fail on every connect.
            raise SecurityError("the broker's certificate does not name %s (it names %s): run `edgefleet init "
                                "--broker-host %s`, restart `edgefleet broker`, then set the board up again"
                                % (address.host, ", ".join(names), address.host), security.broker_cert)
    return address


def node_link(node_id, profile, broker, keepalive=10, security=None):
    security = security or FleetSecurity()
    address = check(profile, broker, security)
    user = password = None
    if security.exists():
        principal = security.node(node_id)
        user, password = principal.name, principal.password
    cfg = image.node_config(node_id, profile, address.host, address.port, keepalive=keepalive,
                            user=user, password=password, tls=address.tls)["broker"]
    files = {image.CA_FILE: security.ca_der()} if address.tls else {}
    return NodeLink(cfg, files, address)


def address_of(broker_cfg):
    """The BrokerAddress a board's config.json names (for keeping it across a re-flash)."""
    return BrokerAddress("mqtts" if broker_cfg.get("tls") else "mqtt", broker_cfg["host"], int(broker_cfg["port"]))
