"""The dashboard served from the controller's process: uvicorn on a thread of its own, with its
own asyncio loop, beside the controller's thread (which it never blocks: live updates cross
over through hub.py, actions through ControllerService.request).

Why Starlette and uvicorn (README.md, "The dashboard"): a small, maintained ASGI toolkit with
streaming responses (server-sent events) and static files built in, and the reference ASGI
server, which runs programmatically on a thread; no template engine or ORM comes along.
"""
import asyncio
import logging
import socket
import threading

from ..errors import ConfigError, DashboardError
from ..extras import require
from ..store import open_registry
from .auth import OperatorCredentials
from .feed import LiveFeed
from .hub import Hub

log = logging.getLogger(__name__)
START_TIMEOUT_S = 10.0


def parse_http_address(text):
    """(host, port) from `ADDR:PORT` (`[::1]:8080` for IPv6); ConfigError when it is not one."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError("--http %s: expected ADDR:PORT, e.g. 127.0.0.1:8080" % text)
    return host, int(port)


class Dashboard:
    """The pieces the controller and the web server share: make it, pass `feed` to the
    ControllerService as its observer, then start() it with the service."""

    def __init__(self, host, port, security=None, state_dir=None, prefix="ef", verify_key_path=None):
        for module in ("starlette", "uvicorn", "prometheus_client"):
            require(module, "the dashboard")
        self.host, self.port = host, port
        # Whose login actions need (auth.py); looked up when the dashboard starts, so that a
        # controller that fails before then writes nothing for it.
        self.security, self.state_dir = security, state_dir
        self.credentials = None
        self.hub = Hub()
        self.feed = LiveFeed(self.hub, prefix)
        self.verify_key_path = verify_key_path   # what checks uploaded bundles (default: the fleet's)
        self.rollouts = None
        self.server = None
        self._thread = None
        self._sock = None

    def bind(self):
        """Take the address now (before the controller starts, so a taken port fails first)."""
        if self._sock is not None:
            return self
        sock = None
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(infos[0][4])
        except (OSError, UnicodeError) as e:
            if sock is not None:
                sock.close()
            raise DashboardError("the dashboard cannot listen on %s:%d: %s" % (self.host, self.port, e)) from None
        self._sock = sock
        self.port = sock.getsockname()[1]
        return self

    def start(self, service):
        import uvicorn
        from .app import create_app
        from .metrics import Metrics
        from .rollouts import Rollouts
        if not service.db_path or service.db_path == ":memory:":
            raise ConfigError("the dashboard reads the registry from a file; the controller has none")
        self.bind()
        self.credentials = OperatorCredentials.for_fleet(self.security, self.state_dir)
        self.rollouts = Rollouts(service, self.hub, self.verify_key_path)
        app = create_app(service, self.feed, self.hub, self.credentials, Metrics(self.feed, self.hub),
                         lambda: open_registry(service.db_path, readonly=True), self.rollouts)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="edgefleet-dashboard", daemon=True)
        self._thread.start()
        if not _wait(lambda: self.server.started or not self._thread.is_alive(), START_TIMEOUT_S) \
                or not self.server.started:
            self.stop()
            raise DashboardError("the dashboard did not start on %s" % self.url)
        return self

    def _serve(self):
        # uvicorn installs signal handlers only on the main thread; this is not it.
        asyncio.run(self.server.serve(sockets=[self._sock]))

    @property
    def url(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "http://%s:%d/" % (host, self.port)

    def native_thread_id(self):
        return self._thread.native_id if self._thread is not None else None

    def stop(self):
        self.hub.close_all()
        if self.server is not None:
            self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()


def _wait(predicate, timeout):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def dashboard_for(address, security=None, state_dir=None, prefix="ef", verify_key_path=None):
    """A Dashboard for `--http ADDR:PORT`, acting with the fleet's operator login."""
    host, port = parse_http_address(address)
    return Dashboard(host, port, security, state_dir, prefix, verify_key_path)
