#!/usr/bin/env python3
"""Scale benchmark: a fleet of protocol-level simulated nodes (controller/sim/protonode.py) on one
mosquitto, ingested by controller replicas (`edgefleet controller --shared`) into one PostgreSQL
registry; the leader killed with SIGKILL halfway through the measured window.

  nodes, replicas   what ran
  hb_per_s          heartbeats the nodes sent per second over the window
  results_per_s     results the registry stored per second over the window
  ingest_p99_ms     99th percentile, over the results made in the window, from the moment a node
                    made a result to the moment a replica received it (the registry's `received`
                    stamp, just before its commit): broker, shared subscription, replica queue
  false_failovers   leadership changes other than the one the benchmark forced
  leader_failover_s from the SIGKILL to the registry naming a new leader
  lost              results made and neither stored nor refused by the stream ledger for a
                    position another node was accepted for (after the nodes stop making new ones
                    and their outboxes drain)
  duplicates        stream positions stored from two results (the ledger's primary key and the
                    results' (node, boot, seq) key make this 0 unless they fail)
  db                "postgresql"

Also measured, in a JSON line {"detail": ...} just before the last: CPU seconds per second of mosquitto,
of each replica and of PostgreSQL, per 1,000 nodes; bytes per result on the wire and in the
registry (table and indexes); the nodes' messages per second.

The simulated nodes run in --sim-procs processes of their own. Every process - broker, database,
replicas, nodes - shares this machine: on a small one the numbers say what the machine could
carry, not what the controller can (docs/scale.md says how to read them).

Prints progress to stderr and one JSON line last on stdout.
Usage: .venv/bin/python tools/bench/scale.py [--nodes 5000] [--replicas 2] [--window 60]
"""
import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time

from edgefleet.controller.broker import MosquittoBroker
from edgefleet.controller.pgserver import PostgresServer
from edgefleet.controller.sim.replicas import ReplicaProcess
from edgefleet.controller.sim.waiting import poll
from edgefleet.controller.store import open_registry

TICKS = os.sysconf("SC_CLK_TCK")


def say(*args):
    print(*args, file=sys.stderr, flush=True)


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100.0 * (len(values) - 1))))]


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks; 0 when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def children(pid):
    """The PIDs whose parent is `pid` (PostgreSQL's backends under its postmaster)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except OSError:
                pass
    return out


def postmaster_pid(server):
    with open(os.path.join(server.dir, "data", "postmaster.pid")) as f:
        return int(f.readline())


def sim_process(ids, host, port, prefix, ramp_s, conn, out_path):
    """One process of simulated nodes: runs until told to stop making results, drains its
    outboxes, writes what it made to out_path."""
    from edgefleet.controller.sim.protofleet import ProtoFleet
    fleet = ProtoFleet(len(ids), host, port, prefix=prefix, ramp_s=ramp_s, ids=ids).start()
    while True:
        cmd = conn.recv()
        if cmd == "stats":
            conn.send({"connected": fleet.connected(), "hb_sent": fleet.stats.hb_sent,
                       "results_made": fleet.stats.results_made, "results_acked": fleet.stats.results_acked,
                       "held": fleet.outbox_records(), "bad": fleet.stats.bad_messages,
                       "fenced_hb": fleet.stats.fenced_heartbeats})
        elif cmd == "quiesce":
            fleet.quiesce()
            conn.send(True)
        elif cmd == "finish":
            with open(out_path, "w") as f:
                json.dump({"born": {n.id: n.born for n in fleet.nodes},
                           "made": [[n.id, n.boot, seq, wl, pos] for n in fleet.nodes
                                    for seq, (wl, pos) in n.made.items()],
                           "held": [[n.id, n.boot, seq] for n in fleet.nodes for seq in n.outbox]}, f)
            fleet.stop()
            conn.send(True)
            return


class Sims:
    def __init__(self, nodes, procs, host, port, prefix, ramp_s, workdir):
        ctx = multiprocessing.get_context("spawn")
        ids = ["sim-%d" % i for i in range(nodes)]
        self.outs, self.conns, self.procs = [], [], []
        for k in range(procs):
            mine = ids[k::procs]
            parent, child = ctx.Pipe()
            out = os.path.join(workdir, "sim%d.json" % k)
            p = ctx.Process(target=sim_process, args=(mine, host, port, prefix, ramp_s, child, out), daemon=True)
            p.start()
            self.outs.append(out)
            self.conns.append(parent)
            self.procs.append(p)

    def ask(self, cmd):
        for c in self.conns:
            c.send(cmd)
        return [c.recv() for c in self.conns]

    def stats(self):
        total = {}
        for s in self.ask("stats"):
            for k, v in s.items():
                total[k] = total.get(k, 0) + v
        return total

    def finish(self):
        self.ask("finish")
        for p in self.procs:
            p.join(30)
        merged = {"born": {}, "made": [], "held": []}
        for out in self.outs:
            with open(out) as f:
                data = json.load(f)
            merged["born"].update(data["born"])
            merged["made"] += data["made"]
            merged["held"] += data["held"]
        return merged

    def kill(self):
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(5)


def query(url, sql, args=()):
    registry = open_registry(url, readonly=True)
    try:
        return [tuple(r.values()) for r in registry.db.execute(sql, args)]
    finally:
        registry.close()


def leadership(url):
    registry = open_registry(url, readonly=True)
    try:
        return registry.leadership()
    finally:
        registry.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--window", type=float, default=60.0, help="measured seconds (the leader dies halfway)")
    ap.add_argument("--rate", type=float, default=0.2, help="results per second per node (default 0.2)")
    ap.add_argument("--sim-procs", type=int, default=2)
    ap.add_argument("--ramp", type=float, default=None, help="seconds over which nodes connect (default nodes/100)")
    ap.add_argument("--drain", type=float, default=120.0, help="seconds allowed for outboxes to drain at the end")
    args = ap.parse_args()
    ramp_s = args.ramp if args.ramp is not None else args.nodes / 100.0
    workdir = tempfile.mkdtemp(prefix="edgefleet-scale-")
    prefix = "sc%d" % os.getpid()
    fleet_file = os.path.join(workdir, "fleet.toml")
    with open(fleet_file, "w") as f:   # every node runs one lane of one workload
        f.write('[[workload]]\nid = "w"\nmodel = "digits_dense"\nrate = %g\nreplicas = %d\n' % (args.rate, args.nodes))
    broker = MosquittoBroker(extra_config="max_connections -1\n").start()
    pg = PostgresServer(durable=True).start()
    url = pg.create_database("fleet")
    replicas, sims = [], None
    out = {"nodes": args.nodes, "replicas": args.replicas, "db": "postgresql"}
    detail = {}
    try:
        for i in range(args.replicas):
            r = ReplicaProcess(broker.port, url, fleet_file, os.path.join(workdir, "ctl-%d.log" % i), "ctl-%d" % i,
                               group=prefix, prefix=prefix)
            r.cmd += ["--keep-days", "7"]
            r.start(timeout=60)
            replicas.append(r)
            if i == 0:
                poll(lambda: leadership(url), 10)
        say("scale: %d replicas up, leader %s; %d nodes connecting over %.0f s" % (
            args.replicas, leadership(url)["holder"], args.nodes, ramp_s))
        sims = Sims(args.nodes, args.sim_procs, broker.host, broker.port, prefix, ramp_s, workdir)
        placed = poll(lambda: (query(url, "SELECT COUNT(*) FROM placements")[0][0] >= args.nodes
                               and sims.stats()["connected"] >= args.nodes) or None, ramp_s + 300, every=2)
        say("scale: %s placements, %s" % (query(url, "SELECT COUNT(*) FROM placements")[0][0], sims.stats()))
        if not placed:
            raise SystemExit("scale: the fleet did not come up (placements or connections short)")
        time.sleep(10)   # past the ramp's backlog
        token0 = leadership(url)["token"]
        pids = {"broker": [broker.proc.pid], "replicas": [r.pid for r in replicas]}
        pg_main = postmaster_pid(pg)
        cpu0 = {"broker": cpu_ticks(broker.proc.pid), "replicas": sum(cpu_ticks(p) for p in pids["replicas"]),
                "postgres": sum(cpu_ticks(p) for p in [pg_main] + children(pg_main))}
        s0, t0 = sims.stats(), time.time()
        stored0 = query(url, "SELECT COUNT(*) FROM results")[0][0]
        time.sleep(args.window / 2)
        leader = leadership(url)["holder"]
        victim = next(r for r in replicas if r.ctrl_id == leader)
        cpu_mid = {"broker": cpu_ticks(broker.proc.pid), "replicas": sum(cpu_ticks(p) for p in pids["replicas"]),
                   "postgres": sum(cpu_ticks(p) for p in [pg_main] + children(pg_main))}
        t_mid = time.time()
        killed = time.monotonic()
        victim.kill()
        new = poll(lambda: (lambda l: l if l and l["holder"] != leader else None)(leadership(url)), 30, every=0.05)
        out["leader_failover_s"] = round(time.monotonic() - killed, 2) if new else None
        say("scale: killed leader %s; %s leads after %s s" % (leader, new and new["holder"], out["leader_failover_s"]))
        time.sleep(max(0.0, args.window / 2 - (time.monotonic() - killed)))
        s1, t1 = sims.stats(), time.time()
        stored1 = query(url, "SELECT COUNT(*) FROM results")[0][0]
        out["hb_per_s"] = round((s1["hb_sent"] - s0["hb_sent"]) / (t1 - t0), 1)
        out["results_per_s"] = round((stored1 - stored0) / (t1 - t0), 1)
        token1 = leadership(url)["token"]
        out["false_failovers"] = token1 - token0 - 1
        # CPU over the first half (before the kill: every replica alive), per 1,000 nodes.
        span = t_mid - t0
        detail["cpu_per_1000_nodes"] = {k: round((cpu_mid[k] - cpu0[k]) / TICKS / span * 1000.0 / args.nodes, 3)
                                        for k in cpu0}
        detail["msgs_per_node_per_s"] = round(((s1["hb_sent"] - s0["hb_sent"]) + (stored1 - stored0)) / (t1 - t0)
                                              / args.nodes, 3)
        sims.ask("quiesce")
        drained = poll(lambda: sims.stats()["held"] == 0, args.drain, every=1)
        detail["held_after_drain"] = sims.stats()["held"]
        detail["drain_ok"] = bool(drained)
        made = sims.finish()
        sims = None
        born = made["born"]
        rows = query(url, "SELECT node, boot, seq, up, received FROM results")
        stored = {(n, b, s) for n, b, s, _, _ in rows}
        positions = {(n, b, s): (wl, pos) for n, b, s, wl, pos in made["made"]}
        in_window = [(rec - (born[n] + up / 1000.0)) * 1000.0 for n, b, s, up, rec in rows
                     if t0 <= born[n] + up / 1000.0 <= t1]
        out["ingest_p99_ms"] = round(percentile(in_window, 99), 1) if in_window else None
        detail["ingest_p50_ms"] = round(percentile(in_window, 50), 1) if in_window else None
        lanes = {}   # (workload, node) -> [(start, until, lane)]
        for wl, lane, node, start, until in query(url, "SELECT workload, lane, node, start, until FROM streams"):
            lanes.setdefault((wl, node), []).append((start, until, lane))
        accepted = {(wl, lane, pos): node for wl, lane, pos, node in
                    query(url, "SELECT workload, lane, pos, node FROM accepted")}

        def lane_of(node, wl, pos):
            for start, until, lane in lanes.get((wl, node), []):
                if start <= pos and (until is None or pos < until):
                    return lane
            for start, until, lane in lanes.get((wl, node), []):
                return lane
            return None

        held = {tuple(h) for h in made["held"]}
        lost = 0
        refused = 0
        for key, (wl, pos) in positions.items():
            if key in stored or key in held:
                continue
            owner = accepted.get((wl, lane_of(key[0], wl, pos), pos))
            if owner is not None and owner != key[0]:
                refused += 1
            else:
                lost += 1
        out["lost"] = lost
        seen = {}
        for key in stored:
            wl, pos = positions[key]
            lane = lane_of(key[0], wl, pos)
            seen[(wl, lane, pos)] = seen.get((wl, lane, pos), 0) + 1
        out["duplicates"] = sum(n - 1 for n in seen.values() if n > 1) + (len(rows) - len(stored))
        detail["refused_by_ledger"] = refused
        detail["still_held"] = len(held)
        detail["results_stored"] = len(rows)
        size = query(url, "SELECT pg_total_relation_size('results') AS r, pg_relation_size('results') AS t, "
                          "pg_total_relation_size('accepted') AS a")[0]
        detail["registry_bytes_per_result"] = round(size[0] / max(1, len(rows)), 1)
        detail["registry_table_bytes_per_result"] = round(size[1] / max(1, len(rows)), 1)
        detail["ledger_bytes_per_result"] = round(size[2] / max(1, len(rows)), 1)
        detail["wire_bytes_per_result"] = round(sum(len(json.dumps({
            "v": 1, "node": n, "boot": b, "seq": s, "wl": wl, "up": 123456, "label": 3, "score": 0.1234, "us": 12000,
            "truth": 3, "in": pos})) for (n, b, s), (wl, pos) in list(positions.items())[:1000])
            / max(1, min(1000, len(positions))), 1)
        say("scale: detail %s" % json.dumps(detail))
    finally:
        if sims is not None:
            sims.kill()
        for r in replicas:
            r.stop()
        pg.stop()
        broker.stop()
    keys = ("nodes", "replicas", "hb_per_s", "results_per_s", "ingest_p99_ms", "false_failovers", "leader_failover_s",
            "lost", "duplicates", "db")
    print(json.dumps({"detail": detail}))
    print(json.dumps({k: out.get(k) for k in keys}))


if __name__ == "__main__":
    main()
