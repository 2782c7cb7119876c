"""The dashboard in a real headless Chromium (Debian's, driven by Selenium through
/usr/bin/chromedriver; nothing downloaded), against a running fleet: a real mosquitto with the
fleet's TLS, logins and ACLs, three simulated Pi-class boards, and the controller serving the
dashboard from its own process as `edgefleet controller --http` does.

The page loads and fills live; a board powered off turns offline on the page within the failure
detector's time without a reload; a drain clicked on the page (signed in as the operator) moves
the work, seen on the page and in `edgefleet status`; actions without the operator's
credentials, and malformed ones, are refused with a clear error; /metrics parses with the
Prometheus client's own parser. A screenshot of every view goes to tests/artifacts/dashboard/
(git-ignored)."""
import base64
import json
import os
import shutil
import time
import urllib.error
import urllib.request

import pytest

from edgefleet import models
from edgefleet.controller import cli
from edgefleet.controller.broker import SecureMosquitto
from edgefleet.controller.deploy import bundle
from edgefleet.controller.install import image, keys
from edgefleet.controller.dashboard.server import dashboard_for
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.mqttlink import BrokerLink
from edgefleet.controller.netutil import BrokerAddress
from edgefleet.controller.security.material import FleetSecurity
from edgefleet.controller.security.principals import CONTROLLER, OPERATOR
from edgefleet.controller.sim.simfleet import SimFleet
from support.waiting import wait_until

pytestmark = pytest.mark.e2e
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts", "dashboard")
LAYOUT = [("pi-1", "rpi4"), ("pi-2", "rpi4"), ("pi-3", "rpi4")]
WORKLOAD = {"id": "digits", "model": "digits_dense", "rate": 2.0, "replicas": 1, "input": {"kind": "samples"},
            "constraints": {"runtime": "cpython"}, "resources": {"cpu_share": 5}}
# Phi-accrual with a Last Will: a board powered off is offline within a few seconds; the detector's
# fallback for silence is HEARTBEAT_TIMEOUT_S (10 s). The page must show it within that plus a tick.
OFFLINE_WITHIN_S = 12.0


class Fleet:
    pass


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("Debian's chromium and chromium-driver are missing; `make test` installs them "
                    "(apt-get install chromium chromium-driver)")
    root = tmp_path_factory.mktemp("dashboard")
    f = Fleet()
    f.home = str(root / "fleet-home")
    f.security = FleetSecurity(os.path.join(f.home, "security"))
    f.security.init()
    f.broker = SecureMosquitto(f.security).start()
    f.db = str(root / "fleet.db")
    # Slotted boards holding the public half of the fleet's signing key, as `flash` and
    # `provision` set them up: they take bundles deployed from the page.
    f.key_path = os.path.join(f.home, keys.HOST_FILE)
    f.key = keys.create(f.key_path)
    f.sim = SimFleet(str(root / "boards"), f.broker.local_host, None, LAYOUT, security=f.security,
                     tls_port=f.broker.port, slotted=True, key=f.key)
    f.bundle = str(root / "rpi4-0.2.0.efb")
    with open(f.bundle, "wb") as out:
        out.write(bundle.build("rpi4", "0.2.0", f.key, mpy_arch=None, simulated=True))
    f.controller = f.dashboard = None
    try:
        for entry in LAYOUT:
            f.sim.add(*entry)
        f.dashboard = dashboard_for("127.0.0.1:0", f.security, verify_key_path=f.key_path)
        link = BrokerLink(BrokerAddress.parse(f.broker.url), CONTROLLER, f.security)
        f.controller = ControllerService(None, None, db_path=f.db, manifests=models.manifests(), link=link,
                                         workloads=[WORKLOAD], observer=f.dashboard.feed).start()
        f.dashboard.start(f.controller)
        f.sim.start()
        wait_until(lambda: len([n for n in (f.controller.snapshot() or {"nodes": []})["nodes"]
                                if n["state"] == "online"]) == 3, 60, "three nodes online")
        f.password = f.security.service(OPERATOR).password
        yield f
    finally:
        f.sim.stop()
        if f.dashboard is not None:
            f.dashboard.stop()
        if f.controller is not None:
            f.controller.stop()
        f.broker.stop()


@pytest.fixture(scope="module")
def browser(fleet):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    os.makedirs(ARTIFACTS)
    try:
        driver.get(fleet.dashboard.url)
        yield driver
    finally:
        driver.quit()


def shot(browser, name):
    path = os.path.join(ARTIFACTS, name + ".png")
    assert browser.save_screenshot(path), path
    assert os.path.getsize(path) > 5000


def row_state(browser, node):
    return browser.execute_script(
        "const r = document.querySelector('#nodes tr[data-node=\"' + arguments[0] + '\"]');"
        "return r ? r.dataset.state : null;", node)


def text(browser, selector):
    """An element's text, read in one step (the page redraws parts of itself as updates come)."""
    return browser.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                                  selector)


def host_of(fleet):
    return next(w for w in fleet.controller.snapshot()["workloads"] if w["id"] == "digits")["nodes"]


def http(fleet, method, path, body=None, auth=None):
    """(status, JSON body) of one request to the dashboard."""
    request = urllib.request.Request(fleet.dashboard.url.rstrip("/") + path, method=method,
                                     data=body if body is None or isinstance(body, bytes) else json.dumps(body).encode())
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=15) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_page_loads_live_and_every_view_renders(fleet, browser):
    wait_until(lambda: all(row_state(browser, n) == "online" for n, _ in LAYOUT), 15, "three online rows")
    assert browser.find_element("id", "live").text == "live"
    # Live: a heartbeat changes a row's seq with no reload.
    browser.execute_script("window.__loaded = 'once'")
    seq = browser.execute_script("return document.querySelector('#nodes tr[data-node=\"pi-1\"]').dataset.hbSeq")
    wait_until(lambda: browser.execute_script(
        "return document.querySelector('#nodes tr[data-node=\"pi-1\"]').dataset.hbSeq") != seq, 5, "a new heartbeat")
    assert browser.execute_script("return window.__loaded") == "once"
    text = browser.find_element("id", "nodes").text
    assert "rpi4" in text and "cpython" in text
    shot(browser, "fleet")

    browser.get(fleet.dashboard.url + "#node/pi-1")
    wait_until(lambda: browser.find_element("id", "node-facts").text.startswith("rpi4"), 10, "the node view")
    # Its plots draw the heartbeats as they come.
    wait_until(lambda: browser.execute_script("return document.querySelectorAll('#plot-cpu polyline').length") > 0,
               10, "a CPU sparkline")
    wait_until(lambda: "boot" in browser.find_element("id", "node-supervision").text, 10, "its boots")
    shot(browser, "node")

    browser.get(fleet.dashboard.url + "#workloads")
    wait_until(lambda: "digits" in browser.find_element("id", "workloads").text, 10, "the workloads view")
    shot(browser, "workloads")
    browser.get(fleet.dashboard.url + "#workload/digits")
    wait_until(lambda: "replicas run on" in browser.find_element("id", "workload-facts").text, 10, "a workload's view")
    shot(browser, "workload")

    browser.get(fleet.dashboard.url + "#events")
    wait_until(lambda: "registered" in browser.find_element("id", "events").text, 10, "the event stream")
    browser.find_element("id", "filter-node").send_keys("pi-2")
    wait_until(lambda: all(r.text.split()[1] == "pi-2" for r in browser.find_elements("css selector", "#events tr")),
               5, "only pi-2's events")
    shot(browser, "events")
    browser.get(fleet.dashboard.url + "#rollouts")
    wait_until(lambda: browser.find_element("id", "rollouts").text != "", 5, "the rollouts view")
    shot(browser, "rollouts")


def test_an_action_without_credentials_is_refused(fleet, browser):
    host = host_of(fleet)[0]
    browser.get(fleet.dashboard.url + "#node/" + host)
    wait_until(lambda: browser.find_element("id", "node-facts").text != "", 10, "the node view")
    assert browser.find_element("id", "who").text == "read-only"
    browser.find_element("id", "drain").click()
    wait_until(lambda: "refused" in browser.find_element("id", "action-msg").text, 10, "the refusal on the page")
    assert "operator" in browser.find_element("id", "action-msg").text
    shot(browser, "refused")
    # Nothing happened: the node is not draining, and the controller recorded no request.
    assert not next(n for n in fleet.controller.snapshot()["nodes"] if n["id"] == host)["draining"]
    # Over HTTP: no credentials, a wrong password, a node's login are all 401 and change nothing.
    assert http(fleet, "POST", "/api/action/drain", {"node": host})[0] == 401
    assert http(fleet, "POST", "/api/action/drain", {"node": host}, auth="ef.operator:wrong")[0] == 401
    node_login = fleet.security.node("pi-1")
    assert http(fleet, "POST", "/api/action/drain", {"node": host}, auth="pi-1:" + node_login.password)[0] == 401
    # Malformed or impossible requests from the operator: a clear error each, never a crash.
    good = "ef.operator:" + fleet.password
    status, body = http(fleet, "POST", "/api/action/drain", b"{not json", auth=good)
    assert status == 400 and "not JSON" in body["error"]
    status, body = http(fleet, "POST", "/api/action/drain", {"node": 7}, auth=good)
    assert status == 400 and "strings" in body["error"]
    status, body = http(fleet, "POST", "/api/action/drain", {"node": "pi-404"}, auth=good)
    assert status == 409 and "pi-404" in body["error"]
    assert http(fleet, "POST", "/api/action/drain", {"node": "x" * 70000}, auth=good)[0] == 413
    status, body = http(fleet, "POST", "/api/action/drain", {"node": "x" * 65400}, auth=good)
    assert status == 400 and body["error"].startswith("bad node 'xxxx"), body["error"][:200]
    assert len(body["error"]) < 200
    status, body = http(fleet, "POST", "/api/action/reboot", {}, auth=good)
    assert status == 404 and "no action" in body["error"]
    assert http(fleet, "GET", "/api/node/pi-404")[0] == 404
    assert http(fleet, "GET", "/api/events?limit=zero")[0] == 400
    assert fleet.controller.alive()
    assert not any(n["draining"] for n in fleet.controller.snapshot()["nodes"])


def test_a_drain_clicked_on_the_page_moves_the_work(fleet, browser, capsys, monkeypatch):
    host = host_of(fleet)[0]
    browser.get(fleet.dashboard.url + "#node/" + host)
    wait_until(lambda: browser.find_element("id", "node-facts").text != "", 10, "the node view")
    browser.find_element("id", "login-pass").send_keys(fleet.password)
    browser.find_element("id", "login-btn").click()
    wait_until(lambda: browser.find_element("id", "who").text == "operator: ef.operator", 10, "signed in")
    browser.find_element("id", "drain").click()
    wait_until(lambda: "draining " + host in browser.find_element("id", "action-msg").text, 10, "the drain's answer")
    browser.get(fleet.dashboard.url + "#fleet")

    def moved_on_page():
        hosts = browser.execute_script(
            "return [...document.querySelectorAll('#nodes tr[data-node]')]"
            ".filter(r => r.querySelector('.wl').textContent.includes('digits')).map(r => r.dataset.node)")
        return hosts and host not in hosts and hosts
    new_hosts = wait_until(moved_on_page, 40, "digits off the drained node, on the page")
    shot(browser, "drained")
    # The workload's page says where it went and why.
    browser.get(fleet.dashboard.url + "#workload/digits")
    wait_until(lambda: "%s → %s" % (host, new_hosts[0]) in (text(browser, "#workload-migrations") or ""), 10,
               "the move on the workload's page")
    assert "drain" in text(browser, "#workload-migrations")
    shot(browser, "workload-moved")
    # The same in `edgefleet status`, asked over the broker as the operator.
    monkeypatch.setenv("EDGEFLEET_HOME", fleet.home)
    capsys.readouterr()
    assert cli.main(["status", "--json", "--broker", fleet.broker.url]) == 0
    status = json.loads(capsys.readouterr().out)
    digits = next(w for w in status["workloads"] if w["id"] == "digits")
    assert host not in digits["nodes"] and digits["nodes"] == new_hosts
    assert next(n for n in status["nodes"] if n["id"] == host)["draining"]
    # Undrained again from the page, so the node takes work (and updates) like the others.
    browser.get(fleet.dashboard.url + "#node/" + host)
    wait_until(lambda: browser.find_element("id", "node-facts").text != "", 10, "the node view")
    browser.find_element("id", "undrain").click()
    wait_until(lambda: "takes work again" in browser.find_element("id", "action-msg").text, 10, "the undrain")
    # The audit log has the request, who asked it, and the drain itself.
    events = fleet.controller.request("events", {"limit": 100}, "test")["events"]
    asked = [e["msg"] for e in events if e["kind"] == "operator_request"]
    assert "ef.operator@127.0.0.1 (dashboard) asked drain node=%s: done" % host in asked, asked
    assert "ef.operator@127.0.0.1 (dashboard) asked drain node=pi-404: refused: no node 'pi-404'" in asked, asked
    assert any(e["kind"] == "drain" and e["node"] == host for e in events)


def test_a_move_from_the_workloads_page(fleet, browser):
    # Once the drain's move has settled (one host, no move in progress) ...
    wait_until(lambda: len(host_of(fleet)) == 1 and not fleet.controller.snapshot()["moves"], 30, "a settled fleet")
    source = host_of(fleet)[0]
    browser.get(fleet.dashboard.url + "#workload/digits")
    try:
        wait_until(lambda: text(browser, "#workload-hosts") == source, 10, "the workload's page")
    except AssertionError:
        raise AssertionError("the workload's page shows %r, the controller %r" % (
            text(browser, "#workload-hosts"), host_of(fleet))) from None
    # The page redraws the select's options as updates come: its value is read in one step.
    target = browser.execute_script("return document.querySelector('#move-to').value")
    assert target and target != source
    browser.find_element("id", "move-btn").click()
    wait_until(lambda: "moving digits from %s to %s" % (source, target) in text(browser, "#action-msg"), 10,
               "the move's answer")
    # The page follows the move live: the hosts line changes without a reload.
    wait_until(lambda: text(browser, "#workload-hosts") == target, 40, "digits on %s, on the page" % target)
    assert host_of(fleet) == [target]
    wait_until(lambda: "%s → %s" % (source, target) in text(browser, "#workload-migrations"), 10, "the move listed")
    assert "operator" in text(browser, "#workload-migrations")


def operator_status(fleet, capsys, monkeypatch):
    """`edgefleet status --json`, asked over the broker as the operator."""
    monkeypatch.setenv("EDGEFLEET_HOME", fleet.home)
    capsys.readouterr()
    assert cli.main(["status", "--json", "--broker", fleet.broker.url]) == 0
    return {n["id"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}


def test_a_deploy_and_a_rollback_from_the_page(fleet, browser, capsys, monkeypatch):
    browser.get(fleet.dashboard.url + "#rollouts")
    wait_until(lambda: browser.find_element("id", "who").text == "operator: ef.operator", 10, "still signed in")
    assert {n["fw"] for n in operator_status(fleet, capsys, monkeypatch).values()} == {image.firmware_version()}
    # A bundle another key signed is refused before anything is sent.
    status, body = http(fleet, "POST", "/api/action/deploy?to=rpi4", b"EFB-not-a-bundle",
                        auth="ef.operator:" + fleet.password)
    assert status == 400 and "bundle" in body["error"], body
    browser.find_element("id", "deploy-file").send_keys(fleet.bundle)
    browser.find_element("id", "deploy-to").send_keys("rpi4")
    browser.find_element("id", "deploy-btn").click()
    wait_until(lambda: "deploying 0.2.0 to 3 node(s)" in browser.find_element("id", "action-msg").text, 10,
               "the deploy's answer")
    # Live while it runs: the canary wave, then the rest, each node's state on the page.
    wait_until(lambda: text(browser, "#rollout-waves td") == "canary", 10, "the waves on the page")
    wait_until(lambda: text(browser, "#rollout-status") == "done", 90, "the rollout done on the page")
    states = browser.execute_script("return [...document.querySelectorAll('[data-rollout-node]')].map(e => e.textContent)")
    assert states == ["confirmed"] * 3
    shot(browser, "deployed")
    nodes = operator_status(fleet, capsys, monkeypatch)
    assert {(n["fw"], n["slot"]) for n in nodes.values()} == {("0.2.0", "slot_b")}

    browser.find_element("id", "rollback-to").send_keys("pi-3")
    browser.find_element("id", "rollback-btn").click()
    wait_until(lambda: "rolling back 1 node(s)" in browser.find_element("id", "action-msg").text, 10, "the answer")
    wait_until(lambda: text(browser, "#rollout-status") == "done", 60, "the rollback done on the page")
    shot(browser, "rolled-back")
    nodes = operator_status(fleet, capsys, monkeypatch)
    assert (nodes["pi-3"]["fw"], nodes["pi-3"]["slot"]) == (image.firmware_version(), "slot_a")
    assert nodes["pi-1"]["fw"] == "0.2.0"
    events = fleet.controller.request("events", {"limit": 200}, "test")["events"]
    asked = [e["msg"] for e in events if e["kind"] == "operator_request"]
    assert any("asked deploy to=rpi4 version=0.2.0: done" in m for m in asked), asked
    assert any("asked rollback to=pi-3: done" in m for m in asked), asked


def test_a_node_powered_off_turns_offline_on_the_page_without_a_reload(fleet, browser):
    browser.get(fleet.dashboard.url + "#fleet")
    victim = next(n for n, _ in LAYOUT if n not in host_of(fleet))
    wait_until(lambda: row_state(browser, victim) == "online", 10, "the victim online on the page")
    browser.execute_script("window.__loaded = 'once'")
    fleet.sim.board(victim).power_off()
    killed = time.monotonic()
    wait_until(lambda: row_state(browser, victim) == "offline", OFFLINE_WITHIN_S, "the victim offline on the page")
    took = time.monotonic() - killed
    assert browser.execute_script("return window.__loaded") == "once", "the page reloaded"
    print("offline on the page %.1f s after the power cut" % took)
    shot(browser, "offline")


def test_metrics_parse_with_the_prometheus_parser(fleet):
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(fleet.dashboard.url + "metrics", timeout=10) as r:
        text = r.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    up = {s.labels["node"]: s.value for s in families["edgefleet_node_up"].samples}
    assert set(up) == {n for n, _ in LAYOUT}
    cpu = {s.labels["node"] for s in families["edgefleet_node_cpu_ratio"].samples}
    assert {n for n, v in up.items() if v == 1.0} <= cpu
    assert any(s.labels["workload"] == "digits" and s.value > 0 for s in families["edgefleet_workload_results"].samples)
    ingest = families["edgefleet_controller_ingest_seconds"].samples
    count = next(s.value for s in ingest if s.name.endswith("_count"))
    assert count > 10
    assert any(s.name.endswith("_count") and s.value > 0 for s in families["edgefleet_controller_tick_seconds"].samples)
    assert any(s.labels.get("kind") == "hb" and s.value > 0 for s in families["edgefleet_controller_messages"].samples)


def test_the_plots_history_survives_a_controller_restart(fleet, browser):
    # Ten-second samples of the run so far are in the registry; a new controller and dashboard
    # on the same registry (the boards carry on) draw them on the node's page straight away.
    before = http(fleet, "GET", "/api/node/pi-1")[1]["samples"]
    assert len(before) >= 2, before
    fleet.dashboard.stop()
    fleet.controller.stop()
    fleet.dashboard = dashboard_for("127.0.0.1:0", fleet.security, verify_key_path=fleet.key_path)
    link = BrokerLink(BrokerAddress.parse(fleet.broker.url), CONTROLLER, fleet.security)
    fleet.controller = ControllerService(None, None, db_path=fleet.db, manifests=models.manifests(), link=link,
                                         observer=fleet.dashboard.feed).start()
    fleet.dashboard.start(fleet.controller)
    after = http(fleet, "GET", "/api/node/pi-1")[1]["samples"]
    assert after[:len(before)] == before
    browser.get(fleet.dashboard.url + "#node/pi-1")
    wait_until(lambda: browser.execute_script(
        "const p = document.querySelector('#plot-cpu polyline');"
        "return p ? p.getAttribute('points').split(' ').length : 0;") >= len(before), 10, "the hour's plot after a restart")
    shot(browser, "node-after-restart")


def test_the_controller_command_serves_the_dashboard(mosquitto, tmp_path):
    """`edgefleet controller --http`, as a process: it says where the dashboard is, serves the
    page, the fleet and /metrics, and stops cleanly on SIGTERM."""
    import signal
    import subprocess
    import sys
    from edgefleet.controller.netutil import free_port
    port = free_port()
    env = dict(os.environ, EDGEFLEET_HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    proc = subprocess.Popen([sys.executable, "-m", "edgefleet.controller.cli", "controller", "--broker",
                             "mqtt://%s:%d" % (mosquitto.host, mosquitto.port), "--db", str(tmp_path / "fleet.db"),
                             "--http", "127.0.0.1:%d" % port], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert lines[1].startswith("edgefleet: dashboard at http://127.0.0.1:%d/ (actions need" % port), lines
        url = "http://127.0.0.1:%d/" % port
        with urllib.request.urlopen(url, timeout=10) as r:
            assert b"<title>edgefleet</title>" in r.read()
        with urllib.request.urlopen(url + "api/fleet", timeout=10) as r:
            assert json.loads(r.read())["nodes"] == []
        with urllib.request.urlopen(url + "metrics", timeout=10) as r:
            assert b"edgefleet_controller_tick_seconds" in r.read()
        # No fleet security here: the dashboard made a login of its own, owner-only.
        logins = tmp_path / "home" / "security" / "dashboard-logins.json"
        assert logins.stat().st_mode & 0o777 == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
