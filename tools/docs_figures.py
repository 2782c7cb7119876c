#!/usr/bin/env python3
"""The benchmarks' figures for the docs, as SVG charts drawn from the benchmarks' own JSON lines.

  failover.svg  tools/bench/failover.py: every trial's time from a node's death to its work's
                first result elsewhere, the shipped detector (phi-accrual + Last Will) against
                the fixed 10 s timeout, powered-off (kill) and frozen (hang) nodes
  energy.svg    tools/bench/energy.py: each battery board's charge over time under battery-aware
                and load-only placement, until the first one is empty
  rollout.svg   tools/bench/rollout.py: a gated rollout's timeline (the canary, then the rest;
                each node's switch and confirmation) and a failed wave's rollback

Input: a file holding a benchmark's output (its JSON line is the last line), by default
docs/figures/data/{failover,energy,rollout}.json; output: docs/figures/*.svg. No plotting
library: the SVG is written here, so the figures need nothing beyond the standard library.
Usage: python3 tools/docs_figures.py [--data DIR] [-o DIR]
"""
import argparse
import json
import math
import os
import re
import sys
from xml.sax.saxutils import escape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = os.path.join(ROOT, "docs", "figures")
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif' font-size='12'"
COLORS = ("#2a6fb0", "#d9822b", "#2f8a4b", "#b22a2a", "#7a4fb0", "#5b6770")


class Svg:
    def __init__(self, width, height):
        self.width, self.height = width, height
        self.parts = []

    def add(self, element):
        self.parts.append(element)

    def line(self, x1, y1, x2, y2, color="#333", width=1, dash=None):
        self.add("<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s' stroke-width='%s'%s/>" % (
            x1, y1, x2, y2, color, width, " stroke-dasharray='%s'" % dash if dash else ""))

    def rect(self, x, y, w, h, color, opacity=1.0):
        self.add("<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='%s' fill-opacity='%.2f'/>" % (
            x, y, max(w, 0.5), h, color, opacity))

    def circle(self, x, y, r, color, filled=True):
        self.add("<circle cx='%.1f' cy='%.1f' r='%.1f' %s/>" % (
            x, y, r, "fill='%s' fill-opacity='0.75'" % color if filled else "fill='none' stroke='%s' stroke-width='1.5'" % color))

    def polyline(self, points, color, width=2):
        self.add("<polyline fill='none' stroke='%s' stroke-width='%s' points='%s'/>" % (
            color, width, " ".join("%.1f,%.1f" % p for p in points)))

    def text(self, x, y, text, anchor="start", size=None, weight=None, color="#222"):
        self.add("<text x='%.1f' y='%.1f' text-anchor='%s' fill='%s'%s%s>%s</text>" % (
            x, y, anchor, color, " font-size='%s'" % size if size else "",
            " font-weight='%s'" % weight if weight else "", escape(str(text))))

    def render(self):
        return ("<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' viewBox='0 0 %d %d' %s>\n"
                "<rect width='100%%' height='100%%' fill='#fff'/>\n%s\n</svg>\n" % (
                    self.width, self.height, self.width, self.height, FONT, "\n".join(self.parts)))


def nice_ticks(top, count=5):
    """Round tick values from 0 to at least `top`."""
    if top <= 0:
        return [0, 1]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(math.ceil(top / step)) + 1)]


def x_axis(svg, left, right, y, ticks, scale, label):
    svg.line(left, y, right, y)
    for t in ticks:
        x = scale(t)
        svg.line(x, y, x, y + 4)
        svg.text(x, y + 17, ("%g" % t), "middle")
    svg.text((left + right) / 2, y + 34, label, "middle")


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else None


def last_json(path):
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    if not lines:
        raise SystemExit("%s is empty" % path)
    try:
        return json.loads(lines[-1])
    except ValueError as e:
        raise SystemExit("%s: its last line is not a benchmark's JSON line (%s)" % (path, e))


def need(data, keys, what):
    missing = [k for k in keys if k not in data]
    if missing:
        raise SystemExit("%s has no %s (run the benchmark from this checkout again)" % (what, ", ".join(missing)))


# -- failover ----------------------------------------------------------------------------------

def failover_figure(data):
    need(data, ("kill_trials_s", "baseline_kill_trials_s"), "the failover JSON")
    rows = [("phi-accrual + Last Will (shipped)", "", COLORS[0]), ("fixed 10 s timeout (baseline)", "baseline_", COLORS[1])]
    values = [v for _, p, _ in rows for k in ("kill_trials_s", "hang_trials_s") for v in data.get(p + k, [])]
    svg = Svg(760, 120 + 70 * len(rows))
    left, right, top = 250, 730, 60
    ticks = nice_ticks(max(values + [1.0]))
    scale = lambda s: left + (right - left) * s / ticks[-1]   # noqa: E731
    svg.text(20, 28, "Failover: a node's failure to its work's first result elsewhere, %d nodes" % data.get("nodes", 0),
             weight="bold", size=14)
    for i, (label, prefix, color) in enumerate(rows):
        y = top + 30 + 70 * i
        svg.text(left - 10, y - 4, label, "end")
        kill, hang = data.get(prefix + "kill_trials_s", []), data.get(prefix + "hang_trials_s", [])
        svg.text(left - 10, y + 12, "%s, %s" % (_count(len(kill), "kill"), _count(len(hang), "hang")), "end", size=11,
                 color="#666")
        svg.line(left, y, right, y, "#ddd")
        for j, s in enumerate(kill):
            svg.circle(scale(s), y - 8 + (j % 5) * 4, 4, color)
        for j, s in enumerate(hang):
            svg.circle(scale(s), y - 8 + (j % 5) * 4, 4, color, filled=False)
        # The benchmark's own percentiles where its line has them (the figure says what it said).
        p50 = data.get(prefix + "p50_s", percentile(kill, 0.5))
        p99 = data.get(prefix + "p99_s", percentile(kill, 0.99))
        if p50 is not None:
            # p50 above the row, p99 below, so that the two never print over each other.
            for v, name, label_y in ((p50, "p50", y - 22), (p99, "p99", y + 26)):
                svg.line(scale(v), y - 18, scale(v), y + 14, color, 2)
                svg.text(scale(v), label_y, "%s %.1f s" % (name, v), "middle", size=10, color=color)
    axis_y = top + 70 * len(rows) + 5
    x_axis(svg, left, right, axis_y, ticks, scale, "seconds (filled: powered off; hollow: frozen)")
    return svg


def _count(n, what):
    return "%d %s%s" % (n, what, "" if n == 1 else "s")


# -- energy ------------------------------------------------------------------------------------

def energy_figure(data):
    need(data, ("battery_aware_curve", "load_only_curve"), "the energy JSON")
    panels = [("battery-aware placement", data["battery_aware_curve"], data["battery_aware_s"]),
              ("load-only placement", data["load_only_curve"], data["load_only_s"])]
    hours = max(max(c["t_h"]) for _, c, _ in panels)
    svg = Svg(820, 360)
    ticks = nice_ticks(hours)
    svg.text(20, 28, "Battery boards' charge until the first is empty: battery-aware %.1f h, load-only %.1f h "
             "(x%.2f)" % (data["battery_aware_s"] / 3600, data["load_only_s"] / 3600, data.get("gain", 0)),
             weight="bold", size=14)
    ids = sorted({n for _, c, _ in panels for n in c["nodes"]})
    for p, (title, curve, empty_s) in enumerate(panels):
        left, right, top, bottom = 60 + 390 * p, 370 + 390 * p, 60, 290
        xs = lambda h: left + (right - left) * h / ticks[-1]   # noqa: E731,B023
        ys = lambda pct: bottom - (bottom - top) * pct / 100.0   # noqa: E731,B023
        svg.text((left + right) / 2, top - 10, title, "middle", weight="bold")
        for pct in (0, 25, 50, 75, 100):
            svg.line(left, ys(pct), right, ys(pct), "#eee")
            svg.text(left - 6, ys(pct) + 4, "%d%%" % pct, "end", size=10)
        for n, node in enumerate(ids):
            values = curve["nodes"].get(node)
            if values:
                svg.polyline([(xs(t), ys(v)) for t, v in zip(curve["t_h"], values)], COLORS[n % len(COLORS)])
        svg.line(xs(empty_s / 3600), top, xs(empty_s / 3600), bottom, "#b22", 1, "4,3")
        svg.text(xs(empty_s / 3600) + 4, top + 12, "first empty", size=10, color="#b22")
        x_axis(svg, left, right, bottom, ticks, xs, "hours")
    for n, node in enumerate(ids):
        svg.rect(60 + 130 * n, 340, 12, 4, COLORS[n % len(COLORS)])
        svg.text(78 + 130 * n, 346, node, size=11)
    return svg


# -- rollout -----------------------------------------------------------------------------------

WAVE = re.compile(r"^wave (\d+)/(\d+): (.*)$")
SOAK = re.compile(r"^wave (\d+) confirmed; soaking ([\d.]+) s")
NODE = re.compile(r"^(\S+) (switching|confirmed|rolledback|rolled back|failed|reverted)")


def timeline_rows(timeline):
    """({node: {state: seconds}}, [(seconds, wave label)], [(seconds, other text)])."""
    nodes, waves, notes = {}, [], []
    for t, text in timeline:
        m = WAVE.match(text)
        if m:
            waves.append((t, "canary" if m.group(1) == "1" and m.group(2) != "1" else "wave %s" % m.group(1)))
            for node in m.group(3).split(", "):
                nodes.setdefault(node, {})["sent"] = t
            continue
        m = NODE.match(text)
        if m and m.group(1) in nodes:
            nodes[m.group(1)].setdefault(m.group(2), t)
            continue
        notes.append((t, text))
    return nodes, waves, notes


def rollout_figure(data):
    need(data, ("timeline",), "the rollout JSON")
    nodes, waves, notes = timeline_rows(data["timeline"])
    order = sorted(nodes, key=lambda n: (nodes[n].get("sent", 0), n))
    end = max([t for t, _ in data["timeline"]] + [1.0])
    row_h = 14 if len(order) <= 20 else max(4, 280 // len(order))
    left, right, top = 110, 780, 60
    bottom = top + row_h * len(order)
    svg = Svg(820, bottom + 110)
    ticks = nice_ticks(end)
    xs = lambda s: left + (right - left) * s / ticks[-1]   # noqa: E731
    svg.text(20, 28, "Gated rollout, %d nodes: healthy in %.1f s (ungated, all at once: %.1f s); a failed wave "
             "rolled back in %.1f s" % (data.get("nodes", len(order)), data.get("all_healthy_s", end),
                                        data.get("baseline_all_healthy_s") or 0, data.get("rollback_s") or 0),
             weight="bold", size=13)
    for t, text in notes:
        m = SOAK.match(text)
        if m:   # the wave's health gate: it must stay healthy this long before the next wave
            svg.rect(xs(t), top, xs(t + float(m.group(2))) - xs(t), bottom - top, "#e0b000", 0.18)
            svg.text(xs(t) + 2, top + 10, "gate %s" % m.group(1), size=9, color="#8a6d00")
    for t, label in waves:
        svg.line(xs(t), top - 8, xs(t), bottom, "#999", 1, "3,3")
        svg.text(xs(t) + 3, top - 12, label, size=10, color="#555")
    for i, node in enumerate(order):
        y = top + row_h * i
        marks = nodes[node]
        if row_h >= 10:
            svg.text(left - 6, y + row_h - 3, node, "end", size=10)
        sent, switched, confirmed = marks.get("sent"), marks.get("switching"), marks.get("confirmed")
        if sent is not None and switched is not None:
            svg.rect(xs(sent), y + 2, xs(switched) - xs(sent), row_h - 4, COLORS[0], 0.6)
        if switched is not None and confirmed is not None:
            svg.rect(xs(switched), y + 2, xs(confirmed) - xs(switched), row_h - 4, COLORS[2], 0.8)
    for t, text in notes:
        if "healthy" in text:
            svg.line(xs(t), top - 8, xs(t), bottom, "#2f8a4b", 1.5)
            svg.text(xs(t) - 3, bottom + 44, text, "end", size=10, color="#2f8a4b")
    x_axis(svg, left, right, bottom, ticks, xs, "seconds since the deploy started")
    svg.rect(left, bottom + 62, 12, 8, COLORS[0], 0.6)
    svg.text(left + 16, bottom + 70, "bundle sent, node installing and rebooting", size=11)
    svg.rect(left + 280, bottom + 62, 12, 8, COLORS[2], 0.8)
    svg.text(left + 296, bottom + 70, "new slot up, until confirmed (workload inferring)", size=11)
    svg.rect(left + 570, bottom + 62, 12, 8, "#e0b000", 0.3)
    svg.text(left + 586, bottom + 70, "health gate (soak)", size=11)
    return svg


FIGURES_FROM = {"failover": failover_figure, "energy": energy_figure, "rollout": rollout_figure}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(FIGURES, "data"), help="folder of NAME.json benchmark outputs")
    ap.add_argument("-o", "--output", default=FIGURES, help="folder the SVGs go to")
    args = ap.parse_args(argv)
    made = []
    for name, draw in FIGURES_FROM.items():
        path = os.path.join(args.data, name + ".json")
        if not os.path.exists(path):
            print("docs_figures: no %s, skipping %s.svg" % (path, name), file=sys.stderr)
            continue
        out = os.path.join(args.output, name + ".svg")
        with open(out, "w") as f:
            f.write(draw(last_json(path)).render())
        made.append(out)
    print(json.dumps({"figures": [os.path.relpath(p, ROOT) for p in made]}))
    return 0 if made else 1


if __name__ == "__main__":
    sys.exit(main())
