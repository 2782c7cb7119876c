"""The fleet as plain data, for the CLI's views, the demo's summary and `status --json`."""


def _link(caps):
    if not caps or "tls" not in caps:
        return None
    return "tls" if caps["tls"] else "plain"


def node_view(node, placements, counts, draining):
    """One node as the views show it."""
    tel = node["telemetry"]
    return {
        "id": node["id"], "board": node["board"], "runtime": node["runtime"], "state": node["state"],
        # The version the node runs and the A/B slot it runs it from (docs/ota.md).
        "fw": node.get("fw"), "slot": node.get("slot"),
        "boot": node["boot"], "cpu": tel.get("cpu"), "mem_free": tel.get("mem_free"),
        "mem_total": tel.get("mem_total"), "power": tel.get("power"), "temp": tel.get("temp"),
        "workloads": [w for w, n in placements if n == node["id"]], "results": counts.get(node["id"], 0),
        "workload_states": {w["id"]: {"state": w["state"], "err": w["err"]} for w in tel.get("wl", [])},
        "last_seen": node["last_seen"], "draining": node["id"] in draining,
        "fenced": tel.get("fenced"),
        # What the node said in its hello: an encrypted link, or plaintext (docs/security.md).
        "link": _link(node.get("caps")),
    }


def snapshot(state, reconciler=None, intake=None):
    """From the in-memory state, plus what only a running controller knows (moves, drains,
    pending replicas, dropped results) when its reconciler and intake are given."""
    counts = state.result_counts()
    placements = state.placements()
    draining = reconciler.draining if reconciler else set()
    nodes = [node_view(node, placements, counts, draining) for node in state.nodes()]
    stats = state.result_stats()
    workloads = []
    for wl in state.workloads():
        s = stats.get(wl["id"], {})
        workloads.append({
            "id": wl["id"], "model": wl["model"], "rate": wl["rate"], "replicas": wl["replicas"],
            "nodes": [n for w, n in placements if w == wl["id"]],
            "pending": reconciler.pending.get(wl["id"]) if reconciler else None,
            "results": s.get("results", 0), "accuracy": s.get("accuracy"), "mean_us": s.get("mean_us"),
            "priority": wl.get("priority", 0), "stuck": reconciler.stuck.get(wl["id"]) if reconciler else None,
        })
    moves = [m.as_dict() for _, m in sorted(reconciler.moves.items())] if reconciler else []
    return {"nodes": nodes, "workloads": workloads, "results_received": sum(counts.values()),
            "moves": moves,
            "dropped": {"out_of_range": intake.out_of_range if intake else 0,
                        "duplicates": intake.duplicates if intake else 0},
            "replays": intake.replays if intake else 0}
