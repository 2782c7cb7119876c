"""A chaos soak for a simulated fleet: one fault at a time, at random, then measurements of what
the faults cost (used by tools/bench/chaos.py and tests/test_chaos.py).

The rig (`ChaosRig`) is everything the fault injector needs to reach, each part replaceable on
its own: six boards, each behind its own cuttable link (linkproxy.py) and in its own SimFleet; a
mosquitto on a fixed port, so that a killed and restarted broker is found at the same address;
the controller as a child process (`python -m edgefleet.controller.cli controller`) on one
registry file, so that it can be SIGKILLed and restarted like the real service; and an MQTT
observer on `ef/#` that notes heartbeats, results, statuses and events.

The broker runs the project's own configuration (controller/broker.py: `persistence false`), so
a restart loses every retained message and session: what a broker in a container without a
volume does, and the harder case for the fleet.

The faults (`FAULT_KINDS`), one at a time with a few calm seconds between them:
  board_kill       power_off() then start() on the same flash: SIGKILL wherever the board was
  board_stop       SIGSTOP of the board's process group for 5-15 s, then SIGCONT (past the
                   board's 8 s watchdog the simulated watchdog resets it: a real hang)
  link_cut         the board's TCP link silent for 5-20 s (no FIN, no RST), then restored
  broker_kill      SIGKILL of mosquitto, restarted on the same port
  broker_stop      SIGSTOP of mosquitto for 3-12 s, then SIGCONT
  controller_kill  SIGKILL of the controller process, restarted on the same registry

The measurements (`measure()`) read the registry's SQLite file for everything it holds (results,
accepted positions, streams, events, the nodes' last heartbeats) and the observer only for what
the registry cannot say: each result's input position (`in`) and the heartbeats of boots that
have ended. Each measurement's function says how it is computed and why.

Only processes this module started are ever signalled, by PID (a board's process group is its
own session, created by SupervisedProcess).
"""
import bisect
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt

from ..broker import MosquittoBroker
from ..fleet import fleetfile
from ..netutil import free_port, wait_for_port
from .linkproxy import LinkProxy
from .simfleet import SimFleet, write_sim_settings

LAYOUT = [
    ("mcu-picow-1", "rpi-pico-w"), ("mcu-picow-2", "rpi-pico-w"), ("mcu-picow-3", "rpi-pico-w"),
    ("pi-rpi4-1", "rpi4"), ("pi-zero2w-1", "rpi-zero-2w"), ("pi-rpi4-2", "rpi4"),
]
WORKLOADS = [
    {"id": "mcu", "model": "digits_dense", "rate": 3.0, "replicas": 2, "input": {"kind": "samples"},
     "constraints": {"runtime": "micropython"}},
    {"id": "pi", "model": "digits_dense", "rate": 5.0, "replicas": 2, "input": {"kind": "samples"},
     "constraints": {"runtime": "cpython"}},
]
KEEPALIVE_S = 2
FAULT_KINDS = ("board_kill", "board_stop", "link_cut", "broker_kill", "broker_stop", "controller_kill")
# Seconds each fault lasts (a board, broker or controller kill: how long it stays down).
DURATIONS = {"board_kill": (1.0, 4.0), "board_stop": (5.0, 15.0), "link_cut": (5.0, 20.0),
             "broker_kill": (1.0, 4.0), "broker_stop": (3.0, 12.0), "controller_kill": (1.0, 4.0)}
CALM_S = (3.0, 6.0)
# A node_offline event for a node faulted less than this long before it is not a false one.
FAULT_SHADOW_S = 15.0
TARGETS = {"lost": 0, "duplicates": 0, "reinferred_inputs": 0, "lane_gap_max_s": 10.0, "false_offlines": 0,
           "safe_mode_entries": 0, "controller_cpu_broker_down_pct": 5.0}


def say(msg):
    print("chaos: " + msg, file=sys.stderr, flush=True)


# -- the observer ---------------------------------------------------------------------------------

class Observer:
    """Everything on `ef/#` that the measurements need, with when it arrived (time.time()).

    A persistent session (clean_session=False, QoS 1) makes the broker queue messages while the
    observer itself is reconnecting; a restarted broker has no session left, so the observer
    subscribes again on every connect. It still hears nothing while the broker is down: nodes
    keep results on flash then and publish them later, but heartbeats of that time are gone.
    """

    def __init__(self, host, port, prefix="ef"):
        self.prefix = prefix
        self.lock = threading.Lock()
        self.results = {}     # (node, boot, seq) -> (workload, in)
        self.hbs = {}         # (node, boot) -> [(arrived, last seq, dropped)]
        self.safe = []        # (arrived, node, boot, how)
        self.connects = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="chaos-observer", clean_session=False)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async(host, port, keepalive=5)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            self.connects += 1
            client.subscribe(self.prefix + "/#", qos=1)

    def _on_message(self, client, userdata, message):
        parts = message.topic.split("/")
        if len(parts) != 4 or parts[1] != "node":
            return
        node, kind = parts[2], parts[3]
        try:
            msg = json.loads(message.payload)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        now = time.time()
        with self.lock:
            if kind == "result" and "seq" in msg:
                self.results[(node, msg.get("boot"), msg["seq"])] = (msg.get("wl"), msg.get("in"))
            elif kind == "hb":
                outbox = msg.get("outbox") or {}
                last = outbox.get("last")
                if isinstance(last, list) and len(last) == 2 and last[0] == msg.get("boot"):
                    self.hbs.setdefault((node, msg["boot"]), []).append((now, last[1], outbox.get("dropped", 0)))
                if msg.get("state") == "safe":
                    self.safe.append((now, node, msg.get("boot"), "hb state safe"))
            elif kind == "status" and msg.get("state") == "safe" and not message.retain:
                self.safe.append((now, node, msg.get("boot"), "status safe"))
            elif kind == "event" and msg.get("kind") == "safe_mode":
                self.safe.append((now, node, msg.get("boot"), "safe_mode event"))

    def snapshot(self):
        with self.lock:
            return dict(self.results), {k: list(v) for k, v in self.hbs.items()}, list(self.safe)

    def stop(self):
        self.client.loop_stop()
        try:
            self.client.disconnect()
        except Exception:
            pass


# -- the controller as a process ------------------------------------------------------------------

class ControllerProcess:
    """`edgefleet controller` in its own session, so a SIGKILL takes it down the way a crash or
    an OOM kill does (no offline status of its own: the broker publishes its will)."""

    def __init__(self, port, db_path, fleet_path, log_path):
        self.cmd = [sys.executable, "-m", "edgefleet.controller.cli", "controller", "--broker",
                    "127.0.0.1:%d" % port, "--db", db_path, "--fleet", fleet_path]
        self.log_path = log_path
        self.proc = None
        self.starts = 0

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout=30.0):
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                if b"controller connected" in f.read():
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("the controller did not start (see %s)" % self.log_path)

    def kill(self):
        """SIGKILL, reaped here (the PID is ours until then)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def cpu_ticks(self):
        """utime + stime of the controller process, in clock ticks (/proc/PID/stat)."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])


# -- the rig --------------------------------------------------------------------------------------

class ChaosRig:
    """Broker, links, boards, controller and observer: started together, each part faultable,
    stopped together (`stop()` stops what was started, even half way)."""

    def __init__(self, workdir, layout=LAYOUT, workloads=WORKLOADS, keepalive=KEEPALIVE_S):
        self.workdir = workdir
        self.layout = layout
        self.workloads = workloads
        self.keepalive = keepalive
        self.db_path = os.path.join(workdir, "fleet.db")
        self.fleet_path = os.path.join(workdir, "fleet.toml")
        self.port = free_port()
        self.broker = None
        self.broker_frozen = False
        self.proxies = {}
        self.fleets = {}
        self.controller = None
        self.observer = None

    def start(self):
        with open(self.fleet_path, "w") as f:
            f.write(fleetfile.dump(self.workloads))
        self.start_broker()
        self.observer = Observer("127.0.0.1", self.port)
        self.controller = ControllerProcess(self.port, self.db_path, self.fleet_path,
                                            os.path.join(self.workdir, "controller.log"))
        self.controller.start()
        for node, board in self.layout:
            proxy = self.proxies[node] = LinkProxy(self.port).start()
            fleet = self.fleets[node] = SimFleet(os.path.join(self.workdir, "fleet"), "127.0.0.1", proxy.port, [],
                                                 keepalive=self.keepalive)
            fleet.add(node, board)
            # Mains power: no battery trigger moving work for reasons that are not the faults'.
            write_sim_settings(fleet.flash_dir(node), {"source": "mains"})
            fleet.board(node).start()
        return self

    def board(self, node):
        return self.fleets[node].board(node)

    def start_broker(self):
        self.broker = MosquittoBroker(port=self.port).start(timeout=15)
        self.broker_frozen = False

    def kill_broker(self):
        os.kill(self.broker.proc.pid, signal.SIGKILL)
        self.broker.proc.wait()
        self.broker.stop()   # the process is gone; this removes its config dir

    def freeze_broker(self, frozen):
        os.kill(self.broker.proc.pid, signal.SIGSTOP if frozen else signal.SIGCONT)
        self.broker_frozen = frozen

    def restore(self):
        """Undo whatever a fault interrupted part way (the fault runner normally does)."""
        if self.broker is not None and self.broker.proc is None:
            self.start_broker()
        elif self.broker_frozen:
            self.freeze_broker(False)
        for proxy in self.proxies.values():
            proxy.restore()
        for node in self.fleets:
            board = self.board(node)
            if board.pid is not None:
                try:
                    os.killpg(board.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            if not board.powered:
                board.start()
        if self.controller is not None and (self.controller.proc is None or self.controller.proc.poll() is not None):
            self.controller.start()

    def stop(self):
        """Stop everything this rig started; keep going past failures."""
        steps = [lambda: self.broker_frozen and self.freeze_broker(False)]
        steps += [(lambda f=f: f.stop()) for f in self.fleets.values()]
        steps += [(lambda p=p: p.stop()) for p in self.proxies.values()]
        steps += [lambda: self.controller and self.controller.stop(), lambda: self.observer and self.observer.stop(),
                  lambda: self.broker and self.broker.stop()]
        for step in steps:
            try:
                step()
            except Exception as e:
                say("stopping: %s" % e)


# -- faults ---------------------------------------------------------------------------------------

class Fault:
    """One fault as it happened: wall-clock times, so they compare with the registry's."""

    def __init__(self, kind, target, start):
        self.kind, self.target, self.start = kind, target, start
        self.end = None           # when the recovery action was taken
        self.note = ""
        self.cpu = None           # (ticks, seconds) of the controller while the broker was down

    def as_dict(self, t0=0.0):
        return {"kind": self.kind, "target": self.target, "start": round(self.start - t0, 2),
                "end": round(self.end - t0, 2) if self.end else None, "note": self.note}

    def describe(self, t0=0.0):
        return "%s %s [%.1f s .. %.1f s]%s" % (self.kind, self.target, self.start - t0, (self.end or 0) - t0,
                                                " (%s)" % self.note if self.note else "")


def schedule(rng, duration, every_kind=True):
    """The fault kinds in order: first each kind once in a shuffled order (so a short run still
    has every kind), then kinds at random; the caller stops asking once time is up."""
    first = list(FAULT_KINDS) if every_kind else []
    rng.shuffle(first)
    for kind in first:
        yield kind
    while True:
        yield rng.choice(FAULT_KINDS)


def inject(rig, kind, rng):
    """Run one fault to its end (recovery included) and return its Fault."""
    lo, hi = DURATIONS[kind]
    hold = rng.uniform(lo, hi)
    if kind in ("board_kill", "board_stop", "link_cut"):
        node = rng.choice(sorted(rig.fleets))
        return _FAULTS[kind](rig, node, hold)
    return _FAULTS[kind](rig, None, hold)


def _board_kill(rig, node, hold):
    board = rig.board(node)
    fault = Fault("board_kill", node, time.time())
    board.power_off()
    time.sleep(hold)
    fault.end = time.time()
    board.start()
    fault.note = "down %.1f s, boot %d" % (fault.end - fault.start, board.boots)
    return fault


def _board_stop(rig, node, hold):
    board = rig.board(node)
    pid, resets = board.pid, board.watchdog_resets
    fault = Fault("board_stop", node, time.time())
    os.killpg(pid, signal.SIGSTOP)
    time.sleep(hold)
    fault.end = time.time()
    if board.pid == pid:
        os.killpg(pid, signal.SIGCONT)
        fault.note = "stopped %.1f s" % hold
    else:
        # Its watchdog reset it meanwhile (a SIGKILL reaches a stopped process): it runs again.
        fault.note = "stopped %.1f s, watchdog reset it (resets %d -> %d)" % (hold, resets, board.watchdog_resets)
    return fault


def _link_cut(rig, node, hold):
    proxy = rig.proxies[node]
    fault = Fault("link_cut", node, time.time())
    proxy.cut()
    time.sleep(hold)
    fault.end = time.time()
    proxy.restore()
    fault.note = "cut %.1f s" % hold
    return fault


def _broker_down(rig, kind, hold, down, up):
    """A broker outage, with the controller's CPU time measured over exactly the outage."""
    fault = Fault(kind, "mosquitto", time.time())
    down()
    ticks0, t0 = rig.controller.cpu_ticks(), time.monotonic()
    time.sleep(hold)
    fault.cpu = (rig.controller.cpu_ticks() - ticks0, time.monotonic() - t0)
    fault.end = time.time()
    up()
    fault.note = "down %.1f s, controller CPU %.1f%%" % (hold, cpu_pct(*fault.cpu))
    return fault


def _broker_kill(rig, node, hold):
    return _broker_down(rig, "broker_kill", hold, rig.kill_broker, rig.start_broker)


def _broker_stop(rig, node, hold):
    return _broker_down(rig, "broker_stop", hold, lambda: rig.freeze_broker(True), lambda: rig.freeze_broker(False))


def _controller_kill(rig, node, hold):
    fault = Fault("controller_kill", "controller", time.time())
    rig.controller.kill()
    time.sleep(hold)
    fault.end = time.time()
    rig.controller.start()
    fault.note = "down %.1f s" % hold
    return fault


_FAULTS = {"board_kill": _board_kill, "board_stop": _board_stop, "link_cut": _link_cut,
           "broker_kill": _broker_kill, "broker_stop": _broker_stop, "controller_kill": _controller_kill}


def cpu_pct(ticks, seconds):
    return 100.0 * ticks / os.sysconf("SC_CLK_TCK") / seconds if seconds > 0 else 0.0


# -- registry reads -------------------------------------------------------------------------------

def connect(db_path):
    db = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=10)
    return db


def stored(db):
    """{(node, boot): set of stored result seqs}."""
    out = {}
    for node, boot, seq in db.execute("SELECT node, boot, seq FROM results"):
        out.setdefault((node, boot), set()).add(seq)
    return out


def telemetry(db):
    """{node: (boot, its last heartbeat's telemetry)} from the registry."""
    return {node: (boot, json.loads(t)) for node, boot, t in db.execute("SELECT id, boot, telemetry FROM nodes")}


def caught_up(db_path, nodes, since, slack=25):
    """True once every node heartbeats again after `since` with its outbox drained: its oldest
    unacknowledged result (absent when none) is of its current boot and within `slack` of its
    newest. An ack means the controller has dealt with a result - stored it, or refused it past
    a hand-over point - so, unlike tests/test_offline.py's caught_up, the count stored is not
    compared with the node's newest seq (a fenced node's refused results never will be)."""
    db = connect(db_path)
    try:
        tel = telemetry(db)
    finally:
        db.close()
    for node in nodes:
        if node not in tel:
            return False
        boot, t = tel[node]
        outbox = t.get("outbox") or {}
        last = outbox.get("last")
        if t.get("at", 0) < since or not last or last[0] != boot:
            return False
        oldest = outbox.get("oldest") or last
        if oldest[0] != boot or oldest[1] < last[1] - slack:
            return False
    return True


def final_newest(db_path, nodes, wait_s=30.0):
    """{node: (boot, newest seq)} as each node's heartbeat says now, once a later heartbeat says
    everything up to it is acknowledged (or after wait_s: then what is missing counts as lost)."""
    db = connect(db_path)
    try:
        tel = telemetry(db)
        newest = {n: tuple((tel[n][1].get("outbox") or {}).get("last") or (tel[n][0], 0)) for n in nodes if n in tel}

        def acked(node, boot, seq):
            outbox = (telemetry(db).get(node, (None, {}))[1].get("outbox") or {})
            oldest = outbox.get("oldest")
            return oldest is None or tuple(oldest) > (boot, seq)

        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not all(acked(n, b, s) for n, (b, s) in newest.items()):
            time.sleep(0.5)
        return newest
    finally:
        db.close()


# -- measurements ---------------------------------------------------------------------------------

def lanes_of(db):
    """{(workload, lane): [(received, pos)] sorted}: the accepted positions of each lane with when
    the registry stored the result accepted for them."""
    lanes = {}
    for wl, lane, pos, received in db.execute(
            "SELECT a.workload, a.lane, a.pos, r.received FROM accepted a JOIN results r "
            "ON r.node = a.node AND r.boot = a.boot AND r.seq = a.seq"):
        lanes.setdefault((wl, lane), []).append((received, pos))
    for rows in lanes.values():
        rows.sort()
    return lanes


def owner_lanes(db):
    """{(workload, node): [(lane, start, until)]} from the registry's stream stretches."""
    out = {}
    for wl, lane, node, start, until in db.execute("SELECT workload, lane, node, start, until FROM streams"):
        out.setdefault((wl, node), []).append((lane, start, until))
    return out


def lane_for(stretches, accepted_at, wl, node, pos):
    """The lane in which `node` owned `pos` of `wl` (the one whose accepted result is this node's
    when stretches of several lanes cover it), or None when it owned it in none."""
    lanes = [lane for lane, start, until in stretches.get((wl, node), ())
             if start <= pos and (until is None or pos < until)]
    for lane in lanes:
        if accepted_at.get((wl, lane, pos), (None,))[0] == node:
            return lane
    return lanes[0] if lanes else None


def measure_lost(db, observed, hbs, newest, stretches, accepted_at):
    """Results a node produced that the registry does not hold, less those it dropped itself
    (outbox.dropped) and those the controller refused because the node did not own the input
    position (results past a hand-over point: the position was accepted from the new owner).

    What a node produced, per (node, boot): seqs 1..N. For the boot a node runs now, N is its
    heartbeat's `outbox.last` after the settle (final_newest). For a boot that ended (killed,
    or reset by its watchdog), N is the `outbox.last` of the second-newest heartbeat the observer
    heard from it: `last` counts results still in RAM, which a SIGKILL takes with it unaccepted,
    but the node ran at least a heartbeat period (several flush periods) after that one, so those
    were on flash. Any seq below the newest stored one is included too: delivery reads from
    flash in order, so everything before a delivered result was on flash.
    """
    have = stored(db)
    keys = set(have) | set(hbs) | {(n, b) for n, (b, _) in newest.items()}
    lost, dropped, refused, detail = 0, {}, 0, []
    for node, boot in sorted(keys):
        reports = hbs.get((node, boot), [])
        if newest.get(node, (None,))[0] == boot:
            produced = newest[node][1]
        else:
            produced = reports[-2][1] if len(reports) >= 2 else 0
        seqs = have.get((node, boot), set())
        produced = max([produced] + list(seqs))
        missing = sorted(set(range(1, produced + 1)) - seqs)
        dropped[node] = max(dropped.get(node, 0), max([r[2] or 0 for r in reports] + [0]))
        really = []
        for seq in missing:
            wl, pos = observed.get((node, boot, seq), (None, None))
            if wl is not None and pos is not None and lane_for(stretches, accepted_at, wl, node, pos) is None:
                refused += 1   # past its hand-over point: a new owner's result holds that position
            elif wl is not None and pos is not None and _accepted_elsewhere(stretches, accepted_at, wl, node, pos):
                refused += 1
            else:
                really.append(seq)
        if really:
            detail.append({"node": node, "boot": boot, "missing": len(really), "produced": produced,
                           "first_missing": really[:8]})
        lost += len(really)
    lost_net = max(0, lost - sum(dropped.values()))
    return lost_net, {"lost_by_boot": detail, "outbox_dropped": sum(dropped.values()), "refused_not_owner": refused}


def _accepted_elsewhere(stretches, accepted_at, wl, node, pos):
    lane = lane_for(stretches, accepted_at, wl, node, pos)
    owner = accepted_at.get((wl, lane, pos), (None,))[0]
    return owner is not None and owner != node


def measure_duplicates(db, observed, stretches, accepted_at):
    """Duplicates two ways.

    By (node, boot, seq): rows sharing the results table's key (the primary key rules them out;
    counted anyway, so a schema change cannot hide them).
    By input position: stored results of different nodes for the same (workload, lane, pos). A
    stored result's position is its `accepted` row when it has one, else the `in` the observer
    saw on its message, put in the lane the node owned it in (streams). The ledger stores a
    position from one node only, so any such pair means the exactly-once ledger was bypassed.
    """
    by_key = db.execute("SELECT COUNT(*) FROM (SELECT 1 FROM results GROUP BY node, boot, seq "
                        "HAVING COUNT(*) > 1)").fetchone()[0]
    nodes_at = {}
    for (wl, lane, pos), (node, boot, seq) in accepted_at.items():
        nodes_at.setdefault((wl, lane, pos), set()).add(node)
    for node, boot, seq, wl in _unaccepted(db):
        pos = observed.get((node, boot, seq), (None, None))[1]
        lane = None if pos is None else lane_for(stretches, accepted_at, wl, node, pos)
        if lane is not None:
            nodes_at.setdefault((wl, lane, pos), set()).add(node)
    crossed = sorted(((k, sorted(v)) for k, v in nodes_at.items() if len(v) > 1), key=repr)
    return by_key + len(crossed), {"duplicate_keys": by_key,
                                   "duplicate_positions": [{"workload": k[0], "lane": k[1], "pos": k[2], "nodes": v}
                                                           for k, v in crossed[:10]]}


def _unaccepted(db):
    """Stored results with no `accepted` row: the controller stored them although their input
    position had been accepted before (ingest.py: the same node again, counted as a replay)."""
    return db.execute("SELECT r.node, r.boot, r.seq, r.workload FROM results r LEFT JOIN accepted a "
                      "ON a.node = r.node AND a.boot = r.boot AND a.seq = r.seq WHERE a.node IS NULL").fetchall()


def measure_reinferred(db, observed, stretches, accepted_at):
    """Input positions one node processed more than once: (workload, lane, pos) for which the
    same node delivered results with different (boot, seq).

    The registry alone shows each such re-inference that was stored: controller/fleet/ingest.py
    stores a result whose position was already accepted from the same node (a "replay") without
    an `accepted` row, so every stored result lacking one is a position processed again. Its
    position comes from the observer (the result's `in`); the positions also collect every
    published result the observer saw, stored or refused, so a re-inference the controller did
    not store counts as well. A stored replay whose message the observer missed (sent while it
    was reconnecting) has no known position and counts as one re-inferred input on its own.
    """
    seen = {}   # (node, wl, lane, pos) -> {(boot, seq)}
    for (wl, lane, pos), (node, boot, seq) in accepted_at.items():
        seen.setdefault((node, wl, lane, pos), set()).add((boot, seq))
    for (node, boot, seq), (wl, pos) in observed.items():
        if wl is None or pos is None:
            continue
        lane = lane_for(stretches, accepted_at, wl, node, pos)
        seen.setdefault((node, wl, lane, pos), set()).add((boot, seq))
    unaccepted = _unaccepted(db)
    unknown = [r for r in unaccepted if observed.get(tuple(r[:3]), (None, None))[1] is None]
    twice = sorted(((k, sorted(v)) for k, v in seen.items() if len(v) > 1), key=repr)
    by_node = {}
    for (node, wl, lane, pos), _ in twice:
        by_node[node] = by_node.get(node, 0) + 1
    return len(twice) + len(unknown), {
        "replays_stored": len(unaccepted), "replays_unknown_pos": len(unknown), "reinferred_by_node": by_node,
        "reinferred_sample": [{"node": k[0], "workload": k[1], "lane": k[2], "pos": k[3], "boot_seq": v}
                              for k, v in twice[:6]]}


def measure_lane_gaps(lanes, workloads, faults, end, t0):
    """Per fault: seconds from its end (the recovery action) until every lane of every declared
    workload (lanes 0..replicas-1) has a result accepted (stored, by `received`) after it; a lane
    with none before `end` counts up to `end`. A later fault that starts before that moment
    (the next fault only waits a few calm seconds) holds the lane back by its own doing: the time
    it was in progress is not charged to this fault (the raw span is kept too, and the later
    fault is charged for its own recovery). Also the longest interval between consecutive
    accepted results of each lane over the whole run, wherever it fell.
    Returns (per-fault recoveries [(seconds, raw seconds, fault, lane)], longest interval per lane)."""
    declared = [(w["id"], lane) for w in workloads for lane in range(w["replicas"])]
    recoveries = []
    for fault in faults:
        worst = (0.0, None)
        for key in declared:
            times = [r for r, _ in lanes.get(key, [])]
            i = bisect.bisect_right(times, fault.end)
            back = (times[i] if i < len(times) else end) - fault.end
            if back > worst[0]:
                worst = (back, key)
        raw = worst[0]
        later = sum(max(0.0, min(o.end, fault.end + raw) - max(o.start, fault.end)) for o in faults
                    if o is not fault and o.start < fault.end + raw and o.end > fault.end)
        recoveries.append((raw - later, raw, fault, worst[1]))
    longest = {}
    for key in declared:
        times = [r for r, _ in lanes.get(key, [])]
        best = (0.0, None)
        for a, b in zip(times, times[1:]):
            if b - a > best[0]:
                best = (b - a, a)
        longest["%s/%d" % key] = {"gap_s": round(best[0], 2), "from": round(best[1] - t0, 2) if best[1] else None}
    return recoveries, longest


def measure_false_offlines(db, faults, t0):
    """node_offline events for a node that no fault touched (killed, stopped, cut) within
    FAULT_SHADOW_S before the event: the fleet-wide faults (broker, controller) touch no node,
    so an offline verdict for a node around them is a false one."""
    windows = {}
    for f in faults:
        if f.kind in ("board_kill", "board_stop", "link_cut"):
            windows.setdefault(f.target, []).append((f.start, (f.end or f.start) + FAULT_SHADOW_S))
    false = []
    for ts, node, msg in db.execute("SELECT ts, node, msg FROM events WHERE kind = 'node_offline' ORDER BY ts"):
        if any(a <= ts <= b for a, b in windows.get(node, ())):
            continue
        near = min(faults, key=lambda f: max(f.start - ts, ts - (f.end or f.start), 0.0), default=None)
        false.append({"node": node, "at": round(ts - t0, 2), "msg": msg,
                      "nearest_fault": near.describe(t0) if near else None})
    return false


def measure_safe_mode(db, safe_seen, t0):
    """Nodes that entered safe mode: `safe_mode` events (the node's), `node_safe` events (the
    controller's, from a status or heartbeat), and safe statuses/heartbeats the observer saw."""
    entries = {}
    for ts, node, kind in db.execute("SELECT ts, node, kind FROM events WHERE kind IN ('safe_mode', 'node_safe')"):
        entries.setdefault(node, []).append("%s at %.1f s" % (kind, ts - t0))
    for ts, node, boot, how in safe_seen:
        entries.setdefault(node, []).append("%s (boot %s) at %.1f s" % (how, boot, ts - t0))
    # Every heartbeat of a safe boot says so: the first few sightings say when it began.
    return {node: seen[:5] for node, seen in entries.items()}


def stream_gaps(db, t0):
    """Input positions never accepted between two accepted ones of the same lane: inputs no
    result stands for. Each gap with the node on either side and when its results were stored."""
    rows = db.execute(
        "SELECT workload, lane, prev, pos, pnode, node, preceived, received FROM (SELECT a.workload, a.lane, a.pos, "
        "a.node, r.received, LAG(a.pos) OVER w AS prev, LAG(a.node) OVER w AS pnode, LAG(r.received) OVER w AS "
        "preceived FROM accepted a JOIN results r ON r.node = a.node AND r.boot = a.boot AND r.seq = a.seq "
        "WINDOW w AS (PARTITION BY a.workload, a.lane ORDER BY a.pos)) WHERE pos - prev > 1").fetchall()
    return [{"lane": "%s/%d" % (wl, lane), "positions": pos - prev - 1, "after": [pnode, prev, round(pr - t0, 2)],
             "before": [node, pos, round(rc - t0, 2)]} for wl, lane, prev, pos, pnode, node, pr, rc in rows]


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def measure(rig, faults, t0, newest):
    """The summary (the JSON line's keys) and the details that explain it."""
    observed, hbs, safe_seen = rig.observer.snapshot()
    db = connect(rig.db_path)
    try:
        accepted_at = {(w, l, p): (n, b, s) for w, l, p, n, b, s in
                       db.execute("SELECT workload, lane, pos, node, boot, seq FROM accepted")}
        stretches = owner_lanes(db)
        results = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        lost, lost_detail = measure_lost(db, observed, hbs, newest, stretches, accepted_at)
        duplicates, dup_detail = measure_duplicates(db, observed, stretches, accepted_at)
        reinferred, re_detail = measure_reinferred(db, observed, stretches, accepted_at)
        recoveries, longest = measure_lane_gaps(lanes_of(db), rig.workloads, faults, time.time(), t0)
        false = measure_false_offlines(db, faults, t0)
        safe = measure_safe_mode(db, safe_seen, t0)
        skipped = stream_gaps(db, t0)
        gaps = sum(g["positions"] for g in skipped)
    finally:
        db.close()
    kinds = {}
    for f in faults:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    outages = [f.cpu for f in faults if f.cpu]
    ticks, secs = sum(t for t, _ in outages), sum(s for _, s in outages)
    gaps_s = [g for g, _, _, _ in recoveries]
    summary = {
        "faults": kinds, "results": results, "lost": lost, "duplicates": duplicates,
        "reinferred_inputs": reinferred,
        "lane_gap_p99_s": round(percentile(gaps_s, 0.99), 2) if gaps_s else None,
        "lane_gap_max_s": round(max(gaps_s), 2) if gaps_s else None,
        # The same, counting the time later faults held a lane back too.
        "lane_gap_raw_max_s": round(max(r for _, r, _, _ in recoveries), 2) if recoveries else None,
        "false_offlines": len(false), "safe_mode_entries": len(safe),
        "controller_cpu_broker_down_pct": round(cpu_pct(ticks, secs), 2) if secs else None,
        # Not a target: input positions skipped inside a lane (a frozen board's source moves on).
        "stream_gaps": gaps,
    }
    details = {
        "lost": lost_detail, "duplicates": dup_detail, "reinferred": re_detail, "stream_gaps": skipped,
        "lane_recovery": [{"gap_s": round(g, 2), "raw_gap_s": round(raw, 2), "lane": "%s/%d" % lane if lane else None,
                           "fault": f.describe(t0),
                           "overlapped_by": [o.describe(t0) for o in faults if f.end < o.start < f.end + raw]}
                          for g, raw, f, lane in sorted(recoveries, key=lambda r: -r[0])],
        "lane_interval_max": longest, "false_offlines": false, "safe_mode": safe,
        "broker_down_cpu": [{"fault": f.describe(t0), "pct": round(cpu_pct(*f.cpu), 2)} for f in faults if f.cpu],
        "faults": [f.as_dict(t0) for f in faults], "observer_connects": rig.observer.connects,
        "controller_starts": rig.controller.starts,
    }
    return summary, details


def missed_targets(summary):
    """[(key, value, target)] for every target the run missed (None counts as missed for the
    measurements that need faults to exist)."""
    faults = summary.get("faults") or {}
    # A broker outage holds back every lane and idles the controller: after one, both are measured.
    broker_down = faults.get("broker_kill", 0) + faults.get("broker_stop", 0)
    needs = {"lane_gap_max_s": broker_down, "controller_cpu_broker_down_pct": broker_down}
    missed = []
    for key, target in TARGETS.items():
        value = summary.get(key)
        if value is None:
            if needs.get(key):   # the faults happened, but nothing was measured: not a pass
                missed.append((key, None, target))
            continue
        if key.endswith("_s") and value > target or key.endswith("_pct") and value >= target or \
                not key.endswith(("_s", "_pct")) and value != target:
            missed.append((key, value, target))
    return missed


# -- the run --------------------------------------------------------------------------------------

def wait_producing(rig, timeout):
    """Until every declared lane has accepted results (the fleet is up and placed)."""
    declared = {(w["id"], lane) for w in rig.workloads for lane in range(w["replicas"])}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(rig.db_path):
            try:
                db = connect(rig.db_path)
                try:
                    have = {(w, l) for w, l, n in db.execute(
                        "SELECT workload, lane, COUNT(*) FROM accepted GROUP BY workload, lane") if n >= 5}
                finally:
                    db.close()
                if declared <= have:
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.5)
    raise RuntimeError("the fleet did not produce on every lane within %.0f s" % timeout)


def run(workdir, duration, seed, rng, settle_timeout=90.0, every_kind=True, ready_timeout=120.0, final_wait_s=30.0):
    """Start the rig, inject faults for `duration` seconds, restore, settle, measure, stop.
    Returns (summary, details); the summary carries the seed."""
    rig = ChaosRig(workdir)
    faults = []
    try:
        started = time.monotonic()
        rig.start()
        wait_producing(rig, ready_timeout)
        t0 = time.time()
        say("fleet up and producing on every lane after %.0f s; faults for %.0f s (seed %s)" % (
            time.monotonic() - started, duration, seed))
        time.sleep(rng.uniform(*CALM_S))
        kinds = schedule(rng, duration, every_kind)
        first_round = len(FAULT_KINDS) if every_kind else 0
        while len(faults) < first_round or time.time() - t0 < duration:
            kind = next(kinds)
            fault = inject(rig, kind, rng)
            faults.append(fault)
            say("%5.1f s  %s" % (time.time() - t0, fault.describe(t0)))
            time.sleep(rng.uniform(*CALM_S))
        rig.restore()
        back = time.time()
        settled = False
        deadline = time.monotonic() + settle_timeout
        nodes = [n for n, _ in rig.layout]
        while time.monotonic() < deadline:
            if caught_up(rig.db_path, nodes, back):
                settled = True
                break
            time.sleep(1.0)
        say("faults over after %.0f s; %s %.0f s after the last" % (
            time.time() - t0, "settled" if settled else "NOT settled", time.time() - back))
        newest = final_newest(rig.db_path, nodes, final_wait_s)
        summary, details = measure(rig, faults, t0, newest)
        details["settled"] = settled
        details["workdir"] = workdir
        return dict({"seed": seed}, **summary), details
    finally:
        rig.stop()
