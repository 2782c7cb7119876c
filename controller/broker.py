"""MQTT brokers the project can start itself: Mosquitto when installed, else amqtt in-process.

Both present the same small interface (start, stop, host, port, url) so the demo, the CLI's
`broker` command and the tests do not care which one runs.
"""
import asyncio
import logging
import os
import shutil
import subprocess
import tempfile
import threading

from .errors import BrokerError
from .netutil import free_port, wait_for_port

log = logging.getLogger(__name__)


class MosquittoBroker:
    """A mosquitto process listening on one loopback port, configured from a temp dir."""

    kind = "mosquitto"

    def __init__(self, port=None, host="127.0.0.1", binary=None, extra_config=""):
        self.host = host
        self.port = port or free_port(host)
        self.binary = binary or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.extra_config = extra_config
        self.proc = None
        self._dir = None

    @property
    def url(self):
        return "mqtt://%s:%d" % (self.host, self.port)

    def start(self, timeout=10.0):
        if not os.path.exists(self.binary):
            raise BrokerError("mosquitto not found (install Debian's 'mosquitto')", self.host, self.port)
        self._dir = tempfile.mkdtemp(prefix="edgefleet-mosquitto-")
        conf = os.path.join(self._dir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(
                "listener %d %s\n"
                "allow_anonymous true\n"
                "persistence false\n"
                # A replaying node can have thousands of QoS1 messages in flight to the controller.
                "max_queued_messages 100000\n"
                "log_dest stderr\n"
                "log_type error\n"
                "log_type warning\n%s\n" % (self.port, self.host, self.extra_config)
            )
        self._log = open(os.path.join(self._dir, "mosquitto.log"), "wb")
        self.proc = subprocess.Popen([self.binary, "-c", conf], stdout=self._log, stderr=subprocess.STDOUT)
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise BrokerError("mosquitto did not start listening", self.host, self.port)
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._dir:
            self._log.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class EmbeddedBroker:
    """amqtt running on its own event loop in a daemon thread of this process."""

    kind = "amqtt"

    def __init__(self, port=None, host="127.0.0.1"):
        self.host = host
        self.port = port or free_port(host)
        self._loop = None
        self._thread = None
        self._broker = None

    @property
    def url(self):
        return "mqtt://%s:%d" % (self.host, self.port)

    def start(self, timeout=10.0):
        try:
            from amqtt.broker import Broker
        except ImportError as e:
            raise BrokerError("amqtt is not installed (pip install 'edgefleet[sim]')") from e
        config = {
            "listeners": {"default": {"type": "tcp", "bind": "%s:%d" % (self.host, self.port)}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        # amqtt logs every connection at INFO; keep the demo's console readable.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        failure = []

        def serve():
            asyncio.set_event_loop(self._loop)
            try:
                self._broker = Broker(config, loop=self._loop)
                self._loop.run_until_complete(self._broker.start())
            except Exception as e:  # reported to the starting thread below
                failure.append(e)
                started.set()
                return
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="amqtt-broker", daemon=True)
        self._thread.start()
        started.wait(timeout)
        if failure:
            raise BrokerError("amqtt failed to start: %s" % failure[0], self.host, self.port)
        if not wait_for_port(self.host, self.port, timeout):
            raise BrokerError("amqtt did not start listening", self.host, self.port)
        return self

    def stop(self):
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            fut.result(10)
        except Exception as e:
            log.warning("amqtt shutdown: %s", e)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def default_broker(port=None, prefer="auto"):
    """The demo's broker: mosquitto when it is on PATH (or asked for), amqtt otherwise."""
    if prefer == "mosquitto" or (prefer == "auto" and shutil.which("mosquitto")):
        return MosquittoBroker(port=port)
    return EmbeddedBroker(port=port)
