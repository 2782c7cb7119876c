"""`edgefleet demo`: an embedded broker, a simulated fleet and the controller, in one command."""
import fcntl
import json
import os
import shutil
import sys
import tempfile
import time

from edgefleet import models

from ..cli import views
from ..errors import ConfigError, InUse
from ..extras import require, require_micropython
from ..install import keys
from ..broker import SecureMosquitto, default_broker, mosquitto_binary
from ..mqttlink import BrokerLink
from ..netutil import BrokerAddress, free_port
from ..security.material import FleetSecurity
from ..security.principals import CONTROLLER
from ..paths import demo_home
from ..fleet.service import ControllerService
from .simfleet import SimFleet, default_index_path, demo_layout

REFRESH_S = 1.0


def demo_workloads(layout, profiles_by_node, available_models):
    """One workload per runtime present: the dense model on MCUs, the conv model on Pi-class."""
    mcu = [entry[0] for entry in layout if profiles_by_node[entry[0]] == "micropython"]
    linux = [entry[0] for entry in layout if profiles_by_node[entry[0]] == "cpython"]
    dense = "digits_dense" if "digits_dense" in available_models else available_models[0]
    conv = "digits_conv" if "digits_conv" in available_models else dense
    workloads = []
    if mcu:
        workloads.append({"id": "digits-mcu", "model": dense, "rate": 4.0, "replicas": len(mcu),
                          "input": {"kind": "samples"}, "constraints": {"runtime": "micropython"}})
    if linux:
        workloads.append({"id": "digits-pi", "model": conv, "rate": 10.0, "replicas": len(linux),
                          "input": {"kind": "samples"}, "constraints": {"runtime": "cpython"}})
    return workloads


def demo_fleet(root, broker_host, broker_port, layout, key_path=None, **options):
    """The demo's SimFleet: slotted boards holding the public half of a signing key (key_path,
    default this host's), as `flash` and `provision` set boards up, so `edgefleet deploy`
    updates them like any others."""
    return SimFleet(root, broker_host, broker_port, layout, slotted=True, key=keys.load_or_create(key_path), **options)


def _render(snapshot, broker, started, rate, security_line, operator_hint=None, dashboard=None):
    lines = ["edgefleet demo: %d nodes, %s broker on %s:%d, up %.0f s, %.1f results/s (Ctrl-C stops)" % (
        len(snapshot["nodes"]), broker.kind, broker.host, broker.port, time.time() - started, rate),
        security_line(snapshot)]
    if operator_hint:
        lines.append("operate it from another terminal: %s (or drain, move, events --follow)" % operator_hint)
    if dashboard is not None:
        lines.append("dashboard: %s (actions need %s)" % (dashboard.url, dashboard.credentials.where))
    lines.append("")
    lines.append(views.nodes_table(snapshot))
    lines.append("")
    lines.append(views.workloads_table(snapshot))
    return "\n".join(lines)


def _secured(snapshot):
    plain = sorted(n["id"] for n in snapshot["nodes"] if n.get("link") == "plain")
    encrypted = sum(1 for n in snapshot["nodes"] if n.get("link") == "tls")
    line = "links: TLS verified against the fleet CA, one login per node, broker ACLs (%d encrypted" % encrypted
    if plain:
        line += "; PLAINTEXT by --insecure-plaintext: %s" % ", ".join(plain)
    return line + ")"


def _open(snapshot):
    return "links: OPEN broker (no TLS, no logins, no ACLs): install mosquitto for a secured fleet"


def secure_broker_available(broker_kind):
    from ..broker import dynsec_plugin
    return broker_kind in ("auto", "mosquitto") and mosquitto_binary() is not None and dynsec_plugin() is not None


def _operator_hint(state_dir, broker, security):
    """How another terminal operates the demo (`edgefleet status`, `drain NODE`, `bundle`,
    `deploy`): its state folder is a fleet host's home of its own - CA, logins, signing key,
    registry - so pointing EDGEFLEET_HOME there leaves the user's fleet and config untouched."""
    if security is None:
        return "EDGEFLEET_HOME=%s edgefleet status --broker mqtt://%s:%d" % (state_dir, broker.host, broker.port)
    return "EDGEFLEET_HOME=%s edgefleet status --broker %s" % (state_dir, broker.url)


def run_demo(nodes=4, duration=None, as_json=False, broker_kind="auto", keepalive=10, out=sys.stdout, arm64=0,
             insecure_plaintext=False, http=None):
    # Checked before anything is started or written.
    if duration is not None and not duration > 0:
        raise ConfigError("the demo's duration must be a number of seconds > 0, not %r" % duration)
    if arm64 < 0:
        raise ConfigError("the number of arm64 nodes must be >= 0, not %r" % arm64)
    available = models.bundled_names()   # the demo runs the bundled models, not the user's own
    if not available:
        raise ConfigError("no models in %s" % models.MODELS_DIR)
    require_micropython("the demo")
    if broker_kind == "mosquitto" and mosquitto_binary() is None:
        raise ConfigError("the demo's --broker mosquitto needs mosquitto: apt-get install mosquitto")
    secure = secure_broker_available(broker_kind)
    if not secure and (broker_kind == "amqtt" or not mosquitto_binary()):
        require("amqtt", "the demo without mosquitto")
    if http is not None:
        from ..dashboard.server import parse_http_address
        parse_http_address(http)
    layout = demo_layout(nodes, tls_only=secure and not insecure_plaintext)
    layout += [("pi-arm64-%d" % (i + 1), "rpi4", "arm64") for i in range(arm64)]
    with DemoLock(demo_home()) as lock:
        return _run_locked(lock.dir, layout, available, secure, duration, as_json, broker_kind, keepalive, out,
                           insecure_plaintext, http)


class DemoLock:
    """The demo's private state folder, held by one demo at a time: a second demo refuses
    instead of deleting the registry and board index the first one is using. The lock is an
    flock on LOCK_FILE, so it goes away with the process, however that ends."""

    LOCK_FILE = "lock"

    def __init__(self, folder):
        self.dir = folder
        self._file = None

    def __enter__(self):
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, self.LOCK_FILE)
        self._file = open(path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise InUse("another `edgefleet demo` (pid %s) is running on %s; stop it first, or give this one "
                        "its own state with EDGEFLEET_HOME=DIR" % (holder, self.dir)) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write("%d\n" % os.getpid())
        self._file.flush()
        return self

    def __exit__(self, *exc):
        self._file.close()   # closing the file releases the flock


def _run_locked(state_dir, layout, available, secure, duration, as_json, broker_kind, keepalive, out,
                insecure_plaintext, http=None):
    # What an earlier demo left: its registry and board index describe boards that are gone.
    db_path = os.path.join(state_dir, "fleet.db")
    # Its own signing key too: `EDGEFLEET_HOME=STATE_DIR edgefleet bundle/deploy` updates its boards.
    key_path = os.path.join(state_dir, keys.HOST_FILE)
    for stale in (db_path, db_path + "-wal", db_path + "-shm", default_index_path()):
        if os.path.exists(stale):
            os.remove(stale)
    root = tempfile.mkdtemp(prefix="edgefleet-demo-")
    link = security = None
    if secure:
        # The demo's own CA and logins, apart from the user's fleet (whose logins it must not touch).
        security = FleetSecurity(os.path.join(state_dir, "security"))
        if not security.exists():
            security.init()
        broker = SecureMosquitto(security, plain_port=free_port() if insecure_plaintext else None).start()
        link = BrokerLink(BrokerAddress.parse(broker.url), CONTROLLER, security)
    else:
        broker = default_broker(prefer=broker_kind).start()
    security_line = _secured if secure else _open
    fleet = controller = operator_hint = dashboard = None
    started = time.time()
    snapshot = None
    try:
        index = default_index_path()
        if secure:
            fleet = demo_fleet(root, broker.local_host, broker.plain_port, layout, key_path=key_path, keepalive=keepalive,
                               index_path=index, security=security, tls_port=broker.port)
        else:
            fleet = demo_fleet(root, broker.host, broker.port, layout, key_path=key_path, keepalive=keepalive,
                               index_path=index)
        runtimes = {}
        for entry in layout:
            fleet.add(*entry)
            runtimes[entry[0]] = fleet.runtimes[entry[0]]
        if http is not None:
            from ..dashboard.server import dashboard_for
            dashboard = dashboard_for(http, security, state_dir=state_dir, verify_key_path=key_path).bind()
        controller = ControllerService(broker.host, broker.port, db_path=db_path, manifests=models.manifests(),
                                       workloads=demo_workloads(layout, runtimes, available), link=link,
                                       observer=dashboard.feed if dashboard else None).start()
        if dashboard is not None:
            dashboard.start(controller)
        for board in fleet.boards.values():
            board.start()
        if not as_json:
            print("edgefleet demo: registry %s (`edgefleet status --db %s` in another terminal)" % (db_path, db_path),
                  file=out, flush=True)
            operator_hint = _operator_hint(state_dir, broker, security)
            if dashboard is not None:
                print("edgefleet demo: dashboard at %s" % dashboard.url, file=out, flush=True)
        last_count, last_time = 0, time.time()
        while duration is None or time.time() - started < duration:
            time.sleep(REFRESH_S)
            snapshot = controller.snapshot()
            if snapshot is None or as_json:
                continue
            now = time.time()
            rate = (snapshot["results_received"] - last_count) / max(1e-3, now - last_time)
            last_count, last_time = snapshot["results_received"], now
            clear = "\x1b[H\x1b[2J" if out.isatty() else "\n"
            out.write(clear + _render(snapshot, broker, started, rate, security_line, operator_hint, dashboard) + "\n")
            out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        # The summary describes the fleet as it ran, before stopping it turns every node offline.
        if controller is not None:
            snapshot = controller.snapshot() or snapshot
        if fleet is not None:
            fleet.stop()
        if dashboard is not None:
            dashboard.stop()
        if controller is not None:
            controller.stop()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    summary = dict(snapshot or {"nodes": [], "workloads": [], "results_received": 0})
    summary["broker"] = broker.kind
    summary["security"] = {"tls": secure, "logins": secure, "acl": secure,
                           "plaintext_nodes": sorted(n["id"] for n in summary["nodes"] if n.get("link") == "plain"),
                           "line": security_line(summary)}
    summary["duration_s"] = round(time.time() - started, 1)
    if dashboard is not None:
        summary["dashboard"] = dashboard.url
    if as_json:
        print(json.dumps(summary), file=out)
    else:
        print("\nedgefleet demo: %d results from %d nodes" % (summary["results_received"], len(summary["nodes"])), file=out)
    return 0
