"""Small socket helpers shared by the broker, the simulated boards and the tests."""
import socket
import time


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


def parse_hostport(text, default_port=1883):
    host, _, port = text.rpartition(":")
    if not host:
        return text, default_port
    return host, int(port)
