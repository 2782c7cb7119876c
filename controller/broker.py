"""MQTT brokers the project can start itself.

SecureMosquitto is the fleet's broker (`edgefleet broker`, the demo): TLS with the fleet's
certificate, no anonymous clients, every login and topic rule from the fleet's security folder
(controller/security/). MosquittoBroker and EmbeddedBroker (amqtt, in-process) are open brokers
for tests and for machines without mosquitto. All present the same small interface (start,
stop, host, port, url) so the demo, the CLI and the tests do not care which one runs.
"""
import asyncio
import glob
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading

from edgefleet.firmware.protocol import DEFAULT_PREFIX

from .errors import BrokerError, EdgefleetError
from .extras import require
from .netutil import free_port, local_address, wait_for_port
from .security import acl, files

log = logging.getLogger(__name__)


def mosquitto_binary():
    """mosquitto's path: on PATH, or Debian's /usr/sbin (off a non-root PATH); None if neither."""
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return found if os.path.exists(found) else None


class MosquittoBroker:
    """An open mosquitto (anonymous clients, no TLS) on one port, configured from a temp dir: for
    tests and benchmarks; SecureMosquitto below is the fleet's."""

    kind = "mosquitto"

    def __init__(self, port=None, host="127.0.0.1", binary=None, extra_config=""):
        self.host = host
        self.port = port or free_port(host)
        self.binary = binary or mosquitto_binary() or "/usr/sbin/mosquitto"
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
        self._launch(conf)
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise BrokerError("mosquitto did not start listening", self.host, self.port)
        return self

    def _launch(self, conf):
        self._log = open(os.path.join(self._dir, "mosquitto.log"), "wb")
        self.proc = subprocess.Popen([self.binary, "-c", conf], stdout=self._log, stderr=subprocess.STDOUT)

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


DYNSEC_PLUGIN = "mosquitto_dynamic_security.so"


def dynsec_plugin():
    for pattern in ("/usr/lib/*/" + DYNSEC_PLUGIN, "/usr/lib/" + DYNSEC_PLUGIN, "/usr/local/lib/" + DYNSEC_PLUGIN,
                    "/usr/lib/*/mosquitto/" + DYNSEC_PLUGIN):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


class SecureMosquitto(MosquittoBroker):
    """mosquitto with the fleet's TLS listener and its logins and ACLs (controller/security/).

    A plaintext listener (same logins, same ACLs, no encryption) opens only when `plain_port`
    is given: for boards that cannot hold TLS beside their model, and only when asked for."""

    SYNC_PERIOD_S = 1.0

    def __init__(self, security, host="127.0.0.1", port=None, plain_port=None, prefix=DEFAULT_PREFIX, binary=None,
                 on_sync=None):
        super().__init__(port or free_port(local_address(host)), host, binary)
        self.security = security
        # Called with each batch of login changes applied, or with the EdgefleetError that
        # stopped one (the next period retries).
        self.on_sync = on_sync
        self._watcher = None
        self._stopping = threading.Event()
        self.plain_port = plain_port
        self.prefix = prefix
        self._applied = {}
        self._applied_mtime = None

    @property
    def local_host(self):
        """The address clients on this host use (a wildcard bind is reached over loopback)."""
        return local_address(self.host)

    @property
    def url(self):
        return "mqtts://%s:%d" % (self.local_host, self.port)

    @property
    def plain_url(self):
        return "mqtt://%s:%d" % (self.local_host, self.plain_port) if self.plain_port else None

    def start(self, timeout=10.0):
        if not os.path.exists(self.binary):
            raise BrokerError("mosquitto not found (install Debian's 'mosquitto')", self.host, self.port)
        plugin = dynsec_plugin()
        if plugin is None:
            raise BrokerError("mosquitto's dynamic-security plugin (%s) is not installed" % DYNSEC_PLUGIN,
                              self.host, self.port)
        security = self.security.require()
        security.ensure_broker_cert([self.host, self.local_host])
        principals = {p.name: p for p in security.principals.all()}
        self._applied_mtime = security.principals.mtime()
        self._dir = tempfile.mkdtemp(prefix="edgefleet-broker-")   # 0700: it holds password hashes
        dynsec = os.path.join(self._dir, "dynsec.json")
        files.write_private(dynsec, json.dumps(acl.dynsec_config(list(principals.values()), self.prefix)))
        listeners = ("listener %d %s\ncafile %s\ncertfile %s\nkeyfile %s\ntls_version tlsv1.2\n"
                     % (self.port, self.host, security.ca_cert, security.broker_cert, security.broker_key))
        if self.plain_port:
            listeners += "listener %d %s\n" % (self.plain_port, self.host)
        conf = os.path.join(self._dir, "mosquitto.conf")
        files.write_private(conf, (
            # Run as whoever started it: the fleet's keys are 0600 and theirs (mosquitto started
            # as root would otherwise switch to its own user and fail to read them).
            "user %s\n"
            "per_listener_settings false\n"
            "allow_anonymous false\n"
            "plugin %s\nplugin_opt_config_file %s\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n%s" % (_user_name(), plugin, dynsec, listeners)))
        self._launch(conf)
        for port in filter(None, (self.port, self.plain_port)):
            if not wait_for_port(self.local_host, port, timeout):
                log_tail = self.log_tail()
                self.stop()
                raise BrokerError("mosquitto did not start listening on %s:%d: %s" % (self.host, port, log_tail),
                                  self.host, port)
        self._applied = principals
        self._stopping.clear()
        self._watcher = threading.Thread(target=self._watch, name="edgefleet-broker-logins", daemon=True)
        self._watcher.start()
        return self

    def _watch(self):
        while not self._stopping.wait(self.SYNC_PERIOD_S):
            try:
                commands = self.sync()
            except EdgefleetError as e:
                commands = e
            if commands and self.on_sync is not None:
                self.on_sync(commands)

    def log_tail(self, limit=2000):
        try:
            with open(os.path.join(self._dir, "mosquitto.log"), "rb") as f:
                return f.read()[-limit:].decode(errors="replace").strip()
        except (OSError, TypeError):
            return ""

    def sync(self, timeout=5.0):
        """Bring the running broker's logins in line with the principals file (a board flashed,
        a stolen one revoked) through the plugin's control topic, as the fleet's admin: without
        a restart, which would drop every node's link. Runs every SYNC_PERIOD_S while the broker
        does. Returns the commands sent; [] when nothing changed."""
        from .mqttlink import BrokerLink
        from .netutil import BrokerAddress
        from .security.principals import ADMIN
        mtime = self.security.principals.mtime()
        if mtime == self._applied_mtime:
            return []
        current = {p.name: p for p in self.security.principals.all()}
        commands = acl.sync_commands(self._applied, current, self.prefix)
        if commands:
            link = BrokerLink(BrokerAddress("mqtts", self.local_host, self.port), ADMIN, self.security)
            _control(link, commands, timeout)
        self._applied, self._applied_mtime = current, mtime
        return commands

    def stop(self):
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(10)
            self._watcher = None
        super().stop()


def _user_name():
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


def _control(link, commands, timeout):
    """Send dynamic-security commands and wait for the plugin's answer; BrokerError naming the
    first command it refused."""
    import queue
    answers = queue.Queue()
    client = link.client("ef-admin-sync")
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(acl.CONTROL_TOPIC + "/response", qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: c.publish(acl.CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
    client.on_message = lambda c, u, m: answers.put(m.payload)
    try:
        client.connect(link.host, link.port, keepalive=10)
    except OSError as e:
        from .mqttlink import connect_error
        raise connect_error(link, e)
    client.loop_start()
    try:
        payload = answers.get(timeout=timeout)
    except queue.Empty:
        raise BrokerError("the broker did not answer the fleet admin's login changes within %.0f s" % timeout,
                          link.host, link.port)
    finally:
        client.loop_stop()
        client.disconnect()
    for answer in json.loads(payload).get("responses", []):
        if answer.get("error"):
            raise BrokerError("the broker refused %s: %s" % (answer.get("command"), answer["error"]), link.host, link.port)


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
        Broker = require("amqtt.broker", "the in-process amqtt broker").Broker
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
