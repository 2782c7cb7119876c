"""Small network helpers shared by the CLI, the broker, the simulated boards and the tests."""
import socket
import time
import urllib.parse

from .errors import ConfigError


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


def parse_broker(text, default_port=1883):
    """(host, port) of a broker given as HOST, HOST:PORT, [IPv6]:PORT or mqtt://HOST:PORT."""
    if not text or not text.strip():
        raise ConfigError("no broker given (HOST:PORT)")
    parts = urllib.parse.urlsplit(text if "://" in text else "mqtt://" + text)
    if parts.scheme != "mqtt" or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError("broker %r: expected HOST:PORT or mqtt://HOST:PORT" % text)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError("broker %r: the port must be a number from 1 to 65535" % text) from None
    if not parts.hostname:
        raise ConfigError("broker %r: no host" % text)
    return parts.hostname, port if port else default_port
