"""Where workloads run: pure functions from fleet state to placements.

Fit (hard; a placement that stops fitting is dropped, unless a move in progress holds it):
  the model is on the node's flash; the workload's constraints hold (runtime, board kinds,
  labels); the memory fits: on a MicroPython board the model's measured heap need (manifest
  `mcu_heap_bytes`) or the declared `arena_bytes`, whichever is larger, summed over every
  workload on the node, within the board's heap less its runtime's recorded budget (and its
  TLS session's, when the node's link is encrypted); on a Linux
  board the declared arena bytes within the heap it reports.

Admission (soft; checked only when a workload is newly put on a node, so the migration
triggers, not the planner, decide when running work leaves):
  the node is online (not down, degraded or draining); its CPU, plus the CPU shares placed on
  it in this round, is under `place_below` percent (hysteresis: triggers fire at 85%, work is
  placed only under 60%); its power is acceptable: mains, or a battery above the low watermark
  with at least `min_budget_h` hours of budget at its present draw; it is not thermally
  throttled; and the workload did not leave it within the cooldown.

Score (higher wins), among admissible nodes:
    score = headroom + w_power * power - 0.05 * workloads already on the node
    headroom = (100 - projected CPU) / 100
    power    = 1.0 on mains; on battery or solar 0.6 * min(1, hours of budget / 48)
               (a solar board that harvests more than it draws counts as 0.6): a battery
               board ranks below a mains board unless it has far more CPU headroom
    w_power  = 1 (battery-aware, the default), 2 for a workload that prefers mains,
               0 under the load-only policy (the energy benchmark's baseline)
Ties are broken by the node id, so the same fleet state always gives the same plan.
Workloads are placed in priority order (higher first, then id): when room runs out, the lower
priority ones stay pending, each with the reasons no node took it.
"""

DEFAULT_CPU_SHARE = 10.0
PLACE_BELOW = 60.0
BATTERY_LOW = 20.0
MIN_BUDGET_H = 1.0
TEMP_LIMIT_C = 80.0
SPREAD_PENALTY = 0.05


def code_in_rom(node):
    """Whether a MicroPython node runs its code in place from ROM (docs/ota.md "Code in ROM"):
    it says so in its hello (caps "code"); a node too old to say loads it from files."""
    return node["caps"].get("code") == "romfs"


def word_bits(node):
    """The word size of a MicroPython node's interpreter (hello caps "word"): 32 on a board,
    64 on a simulated board on a PC; None from a node too old to say."""
    return node["caps"].get("word")


def _figures(record, word):
    # A profile's or a manifest's heap figures are measured on the 64-bit interpreter the
    # simulated boards and CI run; those measured on a 32-bit build, a board's own word size,
    # are kept apart under "word_32" (tools/micropython32/build.sh). A node that says it is
    # 32-bit gets those where they were measured; any other, the 64-bit ones, which are the
    # larger: never too little.
    if word == 32 and "word_32" in record:
        return record["word_32"]
    return record


def runtime_budget(profile, rom, word=None):
    """The heap a board's runtime may hold after boot, with its code in ROM or as files, at the
    node's interpreter word size."""
    figures = _figures(profile, word)
    if rom and "rom_runtime_heap_budget_bytes" in figures:
        return figures["rom_runtime_heap_budget_bytes"]
    return figures.get("runtime_heap_budget_bytes", profile.get("runtime_heap_budget_bytes", 0))


def free_heap_for_models(node, profile):
    """Heap a MicroPython node can give models: its heap less the runtime's recorded budget
    (for the code store it booted from and its word size), less what its TLS session holds
    when its link is encrypted (the profile's measured `tls` figures, tools/bench/tls.py)."""
    heap = node["caps"].get("heap", 0)
    tls = profile.get("tls", {}).get("heap_steady_bytes", 0) if node["caps"].get("tls") else 0
    return heap - runtime_budget(profile, code_in_rom(node), word_bits(node)) - tls


def model_heap_need(manifest, rom=False, word=None):
    """Heap a model needs on a MicroPython node: the engine, loading the model and running it,
    as measured under MicroPython and recorded in its manifest (tools/models/measure_mcu_heap.py),
    with the engine's code in ROM (`mcu_rom_heap_bytes`, less: the code runs in place) or as
    files (`mcu_heap_bytes`, also the figure for a node in ROM when the model has no other), at
    the node's word size where the manifest has figures for it ("word_32")."""
    figures = _figures(manifest, word)
    if figures.get("mcu_heap_bytes") is None:
        figures = manifest
    if rom and figures.get("mcu_rom_heap_bytes") is not None:
        return figures["mcu_rom_heap_bytes"]
    return figures.get("mcu_heap_bytes")


def memory_need(workload, node, manifest):
    """(bytes the workload needs on this node, or None, reason when it cannot be known)."""
    declared = workload.get("resources", {}).get("arena_bytes", 0) or 0
    if node["runtime"] == "micropython":
        need = model_heap_need(manifest or {}, code_in_rom(node), word_bits(node))
        if (manifest or {}).get("mcu_placeable") is False:
            # Added with `edgefleet model add --pi-only`: the MCU engine cannot run it.
            return None, "model %s runs on Pi-class boards only (%s)" % (
                workload["model"], manifest.get("mcu_unsupported") or "the MCU engine cannot run it")
        if need is None:
            return None, "model %s has no measured MicroPython heap need (tools/models/measure_mcu_heap.py)" % workload["model"]
        return max(need, declared), None
    return declared, None


def memory_room(node, profile):
    if node["runtime"] == "micropython":
        return free_heap_for_models(node, profile)
    return node["caps"].get("heap", 0)


def fits(workload, node, profile, manifest, used=0):
    """None when the node can hold the workload (beside `used` bytes of other workloads), else why not."""
    if workload["model"] not in node["caps"].get("models", []):
        return "model %s is not on %s's flash" % (workload["model"], node["id"])
    constraints = workload.get("constraints", {})
    boards = constraints.get("boards")
    if boards and node["board"] not in boards:
        return "%s is a %s, workload wants %s" % (node["id"], node["board"], "/".join(boards))
    runtime = constraints.get("runtime")
    if runtime and node["runtime"] != runtime:
        return "%s runs %s, workload wants %s" % (node["id"], node["runtime"], runtime)
    labels = constraints.get("labels") or []
    missing = [label for label in labels if label not in node["caps"].get("labels", [])]
    if missing:
        return "%s lacks label %s" % (node["id"], ", ".join(missing))
    source = workload.get("input") or {}
    if source.get("kind") == "sensor" and source.get("sensor") not in node["caps"].get("sensors", []):
        return "%s has no sensor %s" % (node["id"], source.get("sensor"))
    if source.get("kind") == "camera" and not node["caps"].get("camera"):
        return "%s has no camera" % node["id"]
    need, why = memory_need(workload, node, manifest)
    if why:
        return why
    room = memory_room(node, profile) - used
    if need > room:
        if node["runtime"] == "micropython":
            return "model %s needs %d bytes of MicroPython heap, %s has %d beside its runtime%s%s" % (
                workload["model"], need, node["id"], room, " and workloads" if used else "", _word_note(node, profile))
        return "workload %s needs %d arena bytes, %s has %d" % (workload["id"], need, node["id"], room)
    return None


def _word_note(node, profile):
    # Where 32-bit figures exist but this node is held to the 64-bit ones, say why: the same
    # board at a board's word size may well have the room (docs/placement.md "Word size").
    word = word_bits(node)
    if word == 32 or "word_32" not in profile:
        return ""
    if word is None:
        return " (64-bit figures: %s does not say its word size)" % node["id"]
    return " (figures for the %d-bit MicroPython %s runs)" % (word, node["id"])


def battery_hours(power, profile):
    """Hours a battery lasts at its present net draw; None when unknown or not on battery."""
    if not power or power.get("src") == "mains" or power.get("pct") is None:
        return None
    capacity = profile.get("power", {}).get("battery_mwh", 0)
    draw = power.get("mw") or profile.get("power", {}).get("idle_mw", 0)
    net = draw - (power.get("harvest_mw") or 0)
    if not capacity:
        return None
    if net <= 0:
        return float("inf")
    return capacity * power["pct"] / 100.0 / net


def power_problem(node, profile, settings=None):
    """None when the node's power and temperature allow new work, else why not."""
    s = settings or {}
    tel = node.get("telemetry") or {}
    power = tel.get("power") or {}
    if power.get("throttled"):
        return "%s is thermally throttled" % node["id"]
    temp = tel.get("temp")
    if temp is not None and temp >= s.get("temp_limit", TEMP_LIMIT_C):
        return "%s is at %.0f C" % (node["id"], temp)
    if power.get("src") in ("battery", "solar") and power.get("pct") is not None:
        low = s.get("battery_low", BATTERY_LOW)
        if power["pct"] < low:
            return "%s's battery is at %.0f%%, under %.0f%%" % (node["id"], power["pct"], low)
        hours = battery_hours(power, profile)
        if hours is not None and hours < s.get("min_budget_h", MIN_BUDGET_H):
            return "%s has %.1f h of battery budget" % (node["id"], hours)
    return None


def power_score(node, profile):
    power = (node.get("telemetry") or {}).get("power") or {}
    if not power or power.get("src") == "mains":
        return 1.0
    hours = battery_hours(power, profile)
    if hours is None:
        return 0.5
    return 0.6 * min(1.0, hours / 48.0)


class Round:
    """One planning round's bookkeeping: memory and CPU given out so far, per node."""

    def __init__(self, nodes, profiles, manifests, settings=None, policy="battery_aware", blocked=None):
        self.nodes = nodes
        self.by_id = {n["id"]: n for n in nodes}
        self.profiles = profiles
        self.manifests = manifests
        self.settings = settings or {}
        self.policy = policy
        # (workload id, node id) pairs a workload may not be placed on now (cooldown)
        self.blocked = blocked or {}
        self.mem_used = {n["id"]: 0 for n in nodes}
        self.cpu_added = {n["id"]: 0.0 for n in nodes}
        self.count = {n["id"]: 0 for n in nodes}

    def profile(self, node):
        return self.profiles.get(node["board"], {})

    def take(self, workload, node_id):
        node = self.by_id[node_id]
        need, _ = memory_need(workload, node, self.manifests.get(workload["model"]))
        self.mem_used[node_id] += need or 0
        self.cpu_added[node_id] += cpu_share(workload)
        self.count[node_id] += 1

    def keeps(self, workload, node):
        return fits(workload, node, self.profile(node), self.manifests.get(workload["model"]), self.mem_used[node["id"]])

    def cpu(self, node):
        return ((node.get("telemetry") or {}).get("cpu") or 0.0) + self.cpu_added[node["id"]]

    def admits(self, workload, node, ignore_cooldown=False):
        """None when the workload may be newly placed on the node, else why not."""
        if node["state"] != "online":
            return "node %s is %s" % (node["id"], node["state"])
        why = self.keeps(workload, node)
        if why:
            return why
        below = self.settings.get("place_below", PLACE_BELOW)
        if self.cpu(node) >= below:
            return "%s's CPU is at %.0f%%, placement needs under %.0f%%" % (node["id"], self.cpu(node), below)
        why = power_problem(node, self.profile(node), self.settings)
        if why:
            return why
        if not ignore_cooldown and (workload["id"], node["id"]) in self.blocked:
            return "%s left %s %s" % (workload["id"], node["id"], self.blocked[(workload["id"], node["id"])])
        return None

    def score(self, workload, node):
        headroom = (100.0 - min(100.0, self.cpu(node) + cpu_share(workload))) / 100.0
        weight = 0.0
        if self.policy == "battery_aware":
            weight = 2.0 if workload.get("constraints", {}).get("prefer_mains") else 1.0
        return headroom + weight * power_score(node, self.profile(node)) - SPREAD_PENALTY * self.count[node["id"]]

    def best(self, workload, exclude=(), ignore_cooldown=False):
        """(node id, None) of the best admissible node, or (None, reasons)."""
        ranked, reasons = self.ranked(workload, exclude, ignore_cooldown)
        if not ranked:
            return None, reasons
        return ranked[0], None

    def ranked(self, workload, exclude=(), ignore_cooldown=False):
        """([node id, best first], reasons the others are not admissible). Taking the first for
        `workload` changes nothing about the rest for it (take() touches that node alone, and a
        workload has one replica per node): its k best nodes are the first k, ranked once."""
        keyed, reasons = [], []
        exclude = set(exclude)   # a workload's replicas: thousands at fleet scale, looked up per node
        for node in self.nodes:
            if node["id"] in exclude:
                continue
            why = self.admits(workload, node, ignore_cooldown)
            if why is not None:
                reasons.append(why)
                continue
            keyed.append((-round(self.score(workload, node), 6), node["id"]))
        keyed.sort()
        return [nid for _, nid in keyed], reasons


def cpu_share(workload):
    return float(workload.get("resources", {}).get("cpu_share", DEFAULT_CPU_SHARE))


def by_priority(workloads):
    return sorted(workloads, key=lambda wl: (-wl.get("priority", 0), wl["id"]))


def plan(workloads, nodes, placements, profiles, manifests, settings=None, policy="battery_aware", blocked=None,
         moves=()):
    """Return (placements, pending) for the fleet.

    workloads: list of {id, model, replicas, constraints, resources, priority}; nodes: registry
    node dicts (state, caps, telemetry); placements: iterable of (workload id, node id) now in
    force; profiles: {board: profile}; manifests: {model: manifest}; moves: (workload id, source
    node, target node) of the moves in progress. Result: a sorted list of (workload, node) and
    {workload id: reason it is not (fully) placed}.

    Existing placements stay while they fit, whatever the node's state: moving running work is
    the migration triggers' decision (controller/fleet/migration.py), made before-break.
    A move's source and target stay as they are until the move ends, fit or not: they are one
    replica, on the lane the target already owns from the hand-over point, and a replica placed
    in the source's stead would be one too many, on a lane of its own.
    """
    rnd = Round(nodes, profiles, manifests, settings, policy, blocked)
    wl_by_id = {wl["id"]: wl for wl in workloads}
    kept = {wl["id"]: [] for wl in workloads}
    kept_sets = {wl["id"]: set() for wl in workloads}   # the same, for lookups
    replicas = {wl["id"]: 0 for wl in workloads}         # kept so far: a move's two nodes are one
    placements = set(placements)
    held = set()   # the moves' placements
    for wid, src, dst in moves:
        if wid in wl_by_id:
            replicas[wid] += 1
            held |= {(wid, nid) for nid in (src, dst) if (wid, nid) in placements}

    def keep(wl, nid):
        kept[wl["id"]].append(nid)
        kept_sets[wl["id"]].add(nid)
        if nid in rnd.by_id:
            rnd.take(wl, nid)

    for wid, nid in sorted(placements - held):
        wl, node = wl_by_id.get(wid), rnd.by_id.get(nid)
        if wl is None or node is None or nid in kept_sets[wid]:
            continue
        if replicas[wid] < wl.get("replicas", 1) and rnd.keeps(wl, node) is None:
            keep(wl, nid)
            replicas[wid] += 1
    # After the settled work: a node briefly holding more than its room (a move onto it chained
    # with one off it) keeps its settled work, and the move's end resolves the overlap.
    for wid, nid in sorted(held):
        keep(wl_by_id[wid], nid)
    pending = {}
    for wl in by_priority(workloads):
        want = wl.get("replicas", 1)
        reasons = []
        missing = want - replicas[wl["id"]]
        if missing > 0:
            ranked, why = rnd.ranked(wl, exclude=kept_sets[wl["id"]])
            for nid in ranked[:missing]:
                keep(wl, nid)
                replicas[wl["id"]] += 1
            if len(ranked) < missing:
                reasons.extend(why)
        placed = replicas[wl["id"]]
        if placed < want:
            detail = "; ".join(sorted(set(reasons))) if reasons else "no nodes registered"
            pending[wl["id"]] = "%d of %d replicas placed: %s" % (placed, want, detail)
    result = sorted((wid, nid) for wid in kept for nid in kept[wid])
    return result, pending
