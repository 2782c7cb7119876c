#!/usr/bin/env python3
"""Energy benchmark: battery-aware vs load-only placement, until the first battery is empty.

A simulation over simulated time, not a live fleet: it runs the controller's own pure
decision code - placement.plan() and placement.Round for where work goes, migration.TriggerWatch
and migration.plan_moves() for when it moves, migration.Cooldown for anti-flap - against the
boards' own power model (boards/power.py: draw = idle_mw + (active_mw - idle_mw) x CPU, the
battery draining by it, a solar board charging from its harvest), stepping one simulated minute
at a time. Moves take effect within the step (a make-before-break hand-over takes seconds; a
step is a minute).

Fleet: two mains Raspberry Pi 4s already 30% busy with other work, four battery Pi Zero 2 Ws
at 100/85/70/55% (one of them solar-assisted, 400 mW by day: 12 h on, 12 h off) and eight
inference workloads of 14% CPU each on a Zero. Each node's CPU is its base load plus the shares
of the workloads it runs.

  battery_aware  the default policy: power in the score, battery watermark (20%) and budget
                 (1 h) in admission, battery triggers moving work off a draining board.
  load_only      the baseline: the score is CPU headroom alone, no power in admission and no
                 battery triggers (CPU triggers and anti-flap as in the default).

battery_aware_s / load_only_s: simulated seconds until the first battery board is empty.
gain = battery_aware_s / load_only_s; battery_aware_curve / load_only_curve: every battery
board's charge each half hour ({"t_h": [...], "nodes": {id: [...]}}). Prints one JSON line last.
Usage: .venv/bin/python tools/bench/energy.py [--hours-max 400]
"""
import argparse
import json
import sys

from edgefleet.boards import catalog
from edgefleet.boards.power import PowerModel
from edgefleet.controller.fleet import migration, placement

STEP_S = 60.0
CURVE_EVERY_S = 1800
SHARE = 14.0
WORKLOADS = [{"id": "w%d" % i, "model": "m", "rate": 1.0, "replicas": 1, "input": {"kind": "samples"},
              "resources": {"cpu_share": SHARE}} for i in range(8)]
MANIFESTS = {"m": {"mcu_heap_bytes": 0}}


def make_fleet():
    profiles = {p["name"]: p for p in catalog.all_profiles()}
    nodes = []
    for i in range(2):
        nodes.append({"id": "pi4-%d" % i, "board": "rpi4", "base": 30.0, "power": PowerModel(profiles["rpi4"]["power"])})
    for i, pct in enumerate((100.0, 85.0, 70.0, 55.0)):
        model = PowerModel(profiles["rpi-zero-2w"]["power"], source="battery", battery_pct=pct)
        node = {"id": "zero-%d" % i, "board": "rpi-zero-2w", "base": 5.0, "power": model, "solar": i == 1}
        nodes.append(node)
    return nodes, profiles


def registry_view(node, cpu):
    """The node as the controller's registry holds it: caps, state and heartbeat telemetry."""
    reading = node["power"].reading()
    if node.get("solar"):
        reading["harvest_mw"] = node["power"].solar_mw
    return {"id": node["id"], "board": node["board"], "runtime": "cpython", "state": "online",
            "caps": {"heap": 1 << 30, "models": ["m"]}, "telemetry": {"cpu": cpu, "power": reading}}


def simulate(policy, hours_max):
    nodes, profiles = make_fleet()
    overrides = {} if policy == "battery_aware" else {"battery_low": 0.0, "min_budget_h": 0.0}
    cfg = migration.settings(**overrides)
    watch, cooldown = migration.TriggerWatch(cfg), migration.Cooldown(cfg)
    wl_by_id = {w["id"]: w for w in WORKLOADS}
    placements = []
    now = 0.0
    moves = 0
    # Each battery board's charge every CURVE_EVERY_S, for the depletion plot (tools/docs_figures.py).
    curve = {"t_h": [], "nodes": {n["id"]: [] for n in nodes if n["power"].battery_pct is not None}}
    while now < hours_max * 3600:
        if now % CURVE_EVERY_S == 0:
            curve["t_h"].append(round(now / 3600, 2))
            for node in nodes:
                if node["id"] in curve["nodes"]:
                    curve["nodes"][node["id"]].append(round(node["power"].battery_pct, 2))
        cpu = {}
        for node in nodes:
            here = sum(SHARE for w, n in placements if n == node["id"])
            cpu[node["id"]] = min(100.0, node["base"] + here)
        views = [registry_view(n, cpu[n["id"]]) for n in nodes]
        placements, _ = placement.plan(WORKLOADS, views, placements, profiles, MANIFESTS, cfg, policy)
        # The migration cycle, as FleetController.migrate() runs it.
        triggered = {}
        for view in views:
            watch.observe(view["id"], view["telemetry"]["cpu"], now)
            if policy != "battery_aware":
                view = dict(view, telemetry=dict(view["telemetry"], power={"src": "mains"}))
            why = watch.reason(view, now, profile=profiles[view["board"]])
            if why and any(n == view["id"] for _, n in placements):
                triggered[view["id"]] = why
        if triggered:
            rnd = placement.Round(views, profiles, MANIFESTS, cfg, policy, cooldown.blocked_targets(now))
            for w, n in placements:
                rnd.take(wl_by_id[w], n)
            chosen, _ = migration.plan_moves(triggered, placements, wl_by_id, rnd, cooldown, set(), now)
            for wid, src, dst, _ in chosen:
                placements = sorted([p for p in placements if p != (wid, src)] + [(wid, dst)])
                cooldown.record(wid, src, now)
                moves += 1
        # One step of the power model at the CPU the placement gives each node.
        for node in nodes:
            here = sum(SHARE for w, n in placements if n == node["id"])
            model = node["power"]
            if node.get("solar"):
                model.source = "solar"
                model.solar_mw = 400.0 if (now // 3600) % 24 < 12 else 0.0
            model.step(STEP_S, min(100.0, node["base"] + here))
            if model.battery_pct is not None and model.battery_pct <= 0.0:
                curve["t_h"].append(round((now + STEP_S) / 3600, 2))
                for n in nodes:
                    if n["id"] in curve["nodes"]:
                        curve["nodes"][n["id"]].append(round(max(0.0, n["power"].battery_pct), 2))
                return now + STEP_S, node["id"], moves, curve
        now += STEP_S
    return now, None, moves, curve


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours-max", type=float, default=400.0)
    args = ap.parse_args(argv)
    aware_s, aware_node, aware_moves, aware_curve = simulate("battery_aware", args.hours_max)
    load_s, load_node, load_moves, load_curve = simulate("load_only", args.hours_max)
    print("battery-aware: first empty %s after %.1f h (%d moves); load-only: %s after %.1f h (%d moves)" % (
        aware_node, aware_s / 3600, aware_moves, load_node, load_s / 3600, load_moves), file=sys.stderr)
    print(json.dumps({"battery_aware_s": round(aware_s), "load_only_s": round(load_s),
                      "gain": round(aware_s / load_s, 3),
                      "battery_aware_curve": aware_curve, "load_only_curve": load_curve}))


if __name__ == "__main__":
    main()
