"""Text renderings of fleet snapshots for the CLI and the demo's live view."""
import time


def _fmt_mem(free, total):
    if not total:
        return "-"
    if total >= 1 << 20:
        return "%d/%dM" % ((total - free) >> 20, total >> 20)
    return "%d/%dK" % ((total - free) >> 10, total >> 10)


def _fmt_power(power):
    if not power:
        return "-"
    if power.get("pct") is not None:
        return "%s %.0f%%" % (power["src"], power["pct"])
    return power["src"]


def _fmt_age(last_seen, now):
    if not last_seen:
        return "never"
    age = now - last_seen
    return "%.0fs ago" % age if age >= 1 else "now"


def _fmt_workloads(node):
    """Placed workloads, each marked with its state on the node when that is not 'running'."""
    states = node.get("workload_states", {})
    parts = []
    for wid in node["workloads"]:
        state = states.get(wid, {}).get("state")
        parts.append(wid if state in (None, "running") else "%s(%s)" % (wid, state))
    return ",".join(parts) or "-"


def table(headers, rows):
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers))]
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
    return "\n".join(lines)


def nodes_table(snapshot, now=None):
    now = now or time.time()
    rows = []
    for n in snapshot["nodes"]:
        cpu = "-" if n.get("cpu") is None else "%.0f%%" % n["cpu"]
        rows.append([
            n["id"], n["board"], n["runtime"], n.get("fw") or "-", n.get("slot") or "-", n.get("link") or "-", n["state"], cpu, _fmt_mem(n.get("mem_free") or 0, n.get("mem_total") or 0),
            _fmt_power(n.get("power")), _fmt_workloads(n), str(n["results"]), _fmt_age(n.get("last_seen"), now),
        ])
    return table(["NODE", "BOARD", "RUNTIME", "VERSION", "SLOT", "LINK", "STATE", "CPU", "MEM", "POWER", "WORKLOADS", "RESULTS", "LAST SEEN"], rows)


def workloads_table(snapshot):
    rows = []
    for w in snapshot["workloads"]:
        acc = "-" if w.get("accuracy") is None else "%.2f" % w["accuracy"]
        mean = "-" if not w.get("mean_us") else "%.1f ms" % (w["mean_us"] / 1000.0)
        where = ",".join(w["nodes"]) or ("pending: " + w["pending"] if w.get("pending") else "-")
        rows.append([w["id"], w["model"], "%g/s" % w["rate"], "%d" % w["replicas"], where, str(w["results"]), acc, mean])
    return table(["WORKLOAD", "MODEL", "RATE", "REPLICAS", "NODES", "RESULTS", "ACCURACY", "INFER"], rows)
