"""Where workloads run: a pure function from fleet state to placements.

A node can host a workload when it is online, has the model on flash, matches the workload's
constraints, and - on a MicroPython board - has the heap the model was measured to need on top
of what its runtime itself needs.
Among capable nodes the one with the fewest workloads wins, then the lowest CPU load, then
the node id, so the same fleet state always gives the same plan.
"""


def free_heap_for_models(node, profile):
    """Heap a MicroPython node can give models: its heap less the runtime's recorded budget."""
    heap = node["caps"].get("heap", 0)
    return heap - profile.get("runtime_heap_budget_bytes", 0)


def model_heap_need(manifest):
    """Heap a model needs on a MicroPython node: the engine, loading the model and running it,
    as measured under MicroPython and recorded in its manifest (tools/models/measure_mcu_heap.py)."""
    return manifest.get("mcu_heap_bytes")


def capable(workload, node, profile, manifest):
    """None when the node can host the workload, else the reason it cannot."""
    if node["state"] != "online":
        return "node %s is %s" % (node["id"], node["state"])
    if workload["model"] not in node["caps"].get("models", []):
        return "model %s is not on %s's flash" % (workload["model"], node["id"])
    constraints = workload.get("constraints", {})
    boards = constraints.get("boards")
    if boards and node["board"] not in boards:
        return "%s is a %s, workload wants %s" % (node["id"], node["board"], "/".join(boards))
    runtime = constraints.get("runtime")
    if runtime and node["runtime"] != runtime:
        return "%s runs %s, workload wants %s" % (node["id"], node["runtime"], runtime)
    if node["runtime"] == "micropython":
        need = model_heap_need(manifest or {})
        if need is None:
            return "model %s has no measured MicroPython heap need (tools/models/measure_mcu_heap.py)" % workload["model"]
        room = free_heap_for_models(node, profile)
        if need > room:
            return "model %s needs %d bytes of MicroPython heap, %s has %d beside its runtime" % (
                workload["model"], need, node["id"], room)
    return None


def plan(workloads, nodes, placements, profiles, manifests):
    """Return (placements, pending) for the fleet.

    workloads: list of {id, model, replicas, constraints}; nodes: registry node dicts;
    placements: iterable of (workload id, node id) now in force; profiles: {board: profile};
    manifests: {model: manifest}. Result: a sorted list of (workload, node) and
    {workload id: reason it is not (fully) placed}.
    """
    by_id = {n["id"]: n for n in nodes}
    load = {n["id"]: 0 for n in nodes}
    kept = {}
    for wl in workloads:
        kept[wl["id"]] = []
    wl_by_id = {wl["id"]: wl for wl in workloads}
    for wid, nid in sorted(placements):
        wl, node = wl_by_id.get(wid), by_id.get(nid)
        if wl is None or node is None:
            continue
        if capable(wl, node, profiles.get(node["board"], {}), manifests.get(wl["model"])) is None:
            if len(kept[wid]) < wl.get("replicas", 1):
                kept[wid].append(nid)
                load[nid] += 1
    pending = {}
    for wl in workloads:
        want = wl.get("replicas", 1)
        reasons = []
        while len(kept[wl["id"]]) < want:
            best = None
            for node in nodes:
                if node["id"] in kept[wl["id"]]:
                    continue
                why = capable(wl, node, profiles.get(node["board"], {}), manifests.get(wl["model"]))
                if why is not None:
                    reasons.append(why)
                    continue
                cpu = node.get("telemetry", {}).get("cpu", 0.0) or 0.0
                key = (load[node["id"]], cpu, node["id"])
                if best is None or key < best[0]:
                    best = (key, node["id"])
            if best is None:
                break
            kept[wl["id"]].append(best[1])
            load[best[1]] += 1
        placed = len(kept[wl["id"]])
        if placed < want:
            detail = "; ".join(sorted(set(reasons))) if reasons else "no nodes registered"
            pending[wl["id"]] = "%d of %d replicas placed: %s" % (placed, want, detail)
    result = sorted((wid, nid) for wid in kept for nid in kept[wid])
    return result, pending
