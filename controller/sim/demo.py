"""`edgefleet demo`: an embedded broker, a simulated fleet and the controller, in one command."""
import json
import os
import shutil
import sys
import tempfile
import time

from edgefleet import models

from ..cli import views
from ..broker import SecureMosquitto, default_broker
from ..mqttlink import BrokerLink
from ..netutil import BrokerAddress, free_port
from ..security.material import FleetSecurity
from ..security.principals import CONTROLLER
from ..store import default_path
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


def _render(snapshot, broker, started, rate, security_line, operator_hint=None):
    lines = ["edgefleet demo: %d nodes, %s broker on %s:%d, up %.0f s, %.1f results/s (Ctrl-C stops)" % (
        len(snapshot["nodes"]), broker.kind, broker.host, broker.port, time.time() - started, rate),
        security_line(snapshot)]
    if operator_hint:
        lines.append("operate it from another terminal: %s (or drain, move, events --follow)" % operator_hint)
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
    from ..broker import dynsec_plugin, mosquitto_binary
    return broker_kind in ("auto", "mosquitto") and mosquitto_binary() is not None and dynsec_plugin() is not None


def _operator_hint(state_dir, broker, security):
    """How another terminal asks the demo's controller (`edgefleet drain NODE ...`): the demo's
    own fleet has its own CA and operator login, installed in a home of their own so that the
    user's fleet and config stay untouched."""
    if security is None:
        return "edgefleet status --broker mqtt://%s:%d" % (broker.host, broker.port)
    from ..security import kit
    home = os.path.join(state_dir, "demo-operator")
    if os.path.exists(os.path.join(home, "security")):
        shutil.rmtree(os.path.join(home, "security"))   # an earlier demo's login
    kit.install(kit.make(BrokerAddress.parse(broker.url), security), home)
    return "EDGEFLEET_HOME=%s edgefleet status --broker %s" % (home, broker.url)


def run_demo(nodes=4, duration=None, as_json=False, broker_kind="auto", keepalive=10, out=sys.stdout, arm64=0,
             insecure_plaintext=False):
    available = models.names()
    if not available:
        from ..errors import ConfigError
        raise ConfigError("no models in %s" % models.MODELS_DIR)
    secure = secure_broker_available(broker_kind)
    layout = demo_layout(nodes, tls_only=secure and not insecure_plaintext)
    layout += [("pi-arm64-%d" % (i + 1), "rpi4", "arm64") for i in range(arm64)]
    state_dir = os.path.dirname(default_path())
    os.makedirs(state_dir, exist_ok=True)
    db_path = os.path.join(state_dir, "demo.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            os.remove(db_path + suffix)
    root = tempfile.mkdtemp(prefix="edgefleet-demo-")
    link = security = None
    if secure:
        # The demo's own CA and logins, apart from the user's fleet (whose logins it must not touch).
        security = FleetSecurity(os.path.join(state_dir, "demo-security"))
        if not security.exists():
            security.init()
        broker = SecureMosquitto(security, plain_port=free_port() if insecure_plaintext else None).start()
        link = BrokerLink(BrokerAddress.parse(broker.url), CONTROLLER, security)
    else:
        broker = default_broker(prefer=broker_kind).start()
    security_line = _secured if secure else _open
    fleet = controller = operator_hint = None
    started = time.time()
    snapshot = None
    try:
        index = default_index_path()
        if os.path.exists(index):
            os.remove(index)  # boards of an earlier demo
        if secure:
            fleet = SimFleet(root, broker.local_host, broker.plain_port, layout, keepalive=keepalive, index_path=index,
                             security=security, tls_port=broker.port)
        else:
            fleet = SimFleet(root, broker.host, broker.port, layout, keepalive=keepalive, index_path=index)
        runtimes = {}
        for entry in layout:
            fleet.add(*entry)
            runtimes[entry[0]] = fleet.runtimes[entry[0]]
        controller = ControllerService(broker.host, broker.port, db_path=db_path, manifests=models.manifests(),
                                       workloads=demo_workloads(layout, runtimes, available), link=link).start()
        for board in fleet.boards.values():
            board.start()
        if not as_json:
            print("edgefleet demo: registry %s (`edgefleet status --db %s` in another terminal)" % (db_path, db_path),
                  file=out, flush=True)
            operator_hint = _operator_hint(state_dir, broker, security)
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
            out.write(clear + _render(snapshot, broker, started, rate, security_line, operator_hint) + "\n")
            out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        # The summary describes the fleet as it ran, before stopping it turns every node offline.
        if controller is not None:
            snapshot = controller.snapshot() or snapshot
        if fleet is not None:
            fleet.stop()
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
    if as_json:
        print(json.dumps(summary), file=out)
    else:
        print("\nedgefleet demo: %d results from %d nodes" % (summary["results_received"], len(summary["nodes"])), file=out)
    return 0
