"""Small network helpers shared by the CLI, the broker, the simulated boards and the tests."""
import os
import socket
import time
import tomllib
import urllib.parse

from .errors import ConfigError


# Bind addresses that mean "every interface": no client dials them, nor may a certificate name them.
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def local_address(host):
    """The address a client on this host reaches a server bound to `host` by."""
    return "127.0.0.1" if host in WILDCARD_ADDRESSES else host


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host, port, timeout=10.0):
    """Return True once a TCP connect to host:port succeeds, False after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
ENV_BROKER = "EDGEFLEET_BROKER"


class BrokerAddress:
    """Where a broker is and how to talk to it: mqtts:// (TLS, verified against the fleet CA)
    or mqtt:// (plaintext), with an optional login name (mqtts://ef.operator@host)."""

    def __init__(self, scheme, host, port, user=None):
        self.scheme = scheme
        self.host = host
        self.port = port
        self.user = user

    @property
    def tls(self):
        return self.scheme == "mqtts"

    @property
    def url(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s%s:%d" % (self.scheme, self.user + "@" if self.user else "", host, self.port)

    def __eq__(self, other):
        return isinstance(other, BrokerAddress) and self.url == other.url

    def __repr__(self):
        return "BrokerAddress(%r)" % self.url

    @classmethod
    def parse(cls, text):
        """HOST, HOST:PORT, [IPv6]:PORT, mqtt://[USER@]HOST[:PORT] or mqtts://[USER@]HOST[:PORT];
        a bare HOST[:PORT] is plaintext MQTT."""
        if not text or not text.strip():
            raise ConfigError("no broker given (mqtts://HOST:PORT or HOST:PORT)")
        text = text.strip()
        parts = urllib.parse.urlsplit(text if "://" in text else "mqtt://" + text)
        if parts.scheme not in DEFAULT_PORTS or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError("broker %r: expected HOST:PORT, mqtt://HOST:PORT or mqtts://HOST:PORT" % text)
        if parts.password is not None:
            raise ConfigError("broker %r: a password does not belong in the address (the fleet's credentials "
                              "are read from its security folder)" % text)
        try:
            port = parts.port
        except ValueError:
            raise ConfigError("broker %r: the port must be a number from 1 to 65535" % text) from None
        if not parts.hostname:
            raise ConfigError("broker %r: no host" % text)
        return cls(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme], parts.username or None)


def parse_broker(text):
    """(host, port) of a broker address (BrokerAddress.parse's forms)."""
    address = BrokerAddress.parse(text)
    return address.host, address.port


def config_path():
    from .paths import config_file
    return config_file()


def configured_broker():
    """The broker named in the user's config file ($XDG_CONFIG_HOME/edgefleet/config.toml,
    `broker = "mqtts://host:8883"`), or None."""
    path = config_path()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError("cannot read %s: %s" % (path, e))
    value = data.get("broker")
    if value is not None and not isinstance(value, str):
        raise ConfigError("%s: 'broker' must be a string such as \"mqtts://host:8883\"" % path)
    return value


DEFAULT_BROKER = "mqtts://127.0.0.1:8883"


def resolve_broker(given=None, default=DEFAULT_BROKER):
    """The broker to use: --broker, else $EDGEFLEET_BROKER, else the config file, else `default`
    (None when it is None: `flash` then keeps the board's own)."""
    for text in (given, os.environ.get(ENV_BROKER), configured_broker(), default):
        if text:
            return BrokerAddress.parse(text)
    return None
