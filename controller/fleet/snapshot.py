"""The fleet as plain data, for the CLI's views, the demo's summary and `status --json`."""


def _link(caps):
    if not caps or "tls" not in caps:
        return None
    return "tls" if caps["tls"] else "plain"


def node_view(node, workloads, results, draining):
    """One node as the views show it: `workloads` placed on it, `results` received from it."""
    tel = node["telemetry"]
    return {
        "id": node["id"], "board": node["board"], "runtime": node["runtime"], "state": node["state"],
        # The version the node runs and the A/B slot it runs it from (docs/ota.md).
        "fw": node.get("fw"), "slot": node.get("slot"),
        "boot": node["boot"], "cpu": tel.get("cpu"), "mem_free": tel.get("mem_free"),
        "mem_total": tel.get("mem_total"), "power": tel.get("power"), "temp": tel.get("temp"),
        "workloads": workloads, "results": results,
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
    # Grouped once: a fleet has thousands of nodes and placements, and this runs every tick.
    by_node, by_workload = {}, {}
    for wid, node_id in placements:
        by_node.setdefault(node_id, []).append(wid)
        by_workload.setdefault(wid, []).append(node_id)
    nodes = [node_view(node, by_node.get(node["id"], []), counts.get(node["id"], 0), draining)
             for node in state.nodes()]
    stats = state.result_stats()
    workloads = []
    for wl in state.workloads():
        s = stats.get(wl["id"], {})
        workloads.append({
            "id": wl["id"], "model": wl["model"], "rate": wl["rate"], "replicas": wl["replicas"],
            "nodes": by_workload.get(wl["id"], []),
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
