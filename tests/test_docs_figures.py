"""tools/docs_figures.py: the benchmarks' JSON lines drawn as SVG, each figure holding what its
data says (a mark per trial, a line per battery board, a bar per node), and a JSON line from an
older benchmark that lacks the data refused by name."""
import importlib.util
import json
import os
import xml.etree.ElementTree as ET

import pytest

TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "docs_figures.py")
SVG = "{http://www.w3.org/2000/svg}"


def load_tool():
    spec = importlib.util.spec_from_file_location("docs_figures", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FAILOVER = {"nodes": 8, "board": "rpi-pico-w", "kill_trials_s": [1.0, 1.1, 1.3], "hang_trials_s": [3.0],
            "baseline_kill_trials_s": [10.5, 11.0, 11.2], "baseline_hang_trials_s": [10.9]}
ENERGY = {"battery_aware_s": 90000, "load_only_s": 50000, "gain": 1.8,
          "battery_aware_curve": {"t_h": [0, 12, 25], "nodes": {"z-0": [100, 50, 1], "z-1": [60, 30, 0]}},
          "load_only_curve": {"t_h": [0, 13.9], "nodes": {"z-0": [100, 40], "z-1": [60, 0]}}}
ROLLOUT = {"nodes": 3, "all_healthy_s": 9.0, "baseline_all_healthy_s": 3.0, "rollback_s": 2.0, "timeline": [
    [0.0, "wave 1/2: n-1"], [1.5, "n-1 switching"], [2.0, "n-1 confirmed"], [2.0, "wave 1 confirmed; soaking 2.0 s"],
    [4.0, "wave 2/2: n-2, n-3"], [6.0, "n-2 switching"], [6.5, "n-3 switching"], [7.0, "n-2 confirmed"],
    [7.0, "n-3 confirmed"], [7.0, "wave 2 confirmed; soaking 2.0 s"], [9.0, "all 2 waves healthy on 0.2.0"]]}


def render(tmp_path, name, data):
    tool = load_tool()
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / (name + ".json")).write_text("progress line\n" + json.dumps(data) + "\n")
    assert tool.main(["--data", str(tmp_path / "data"), "-o", str(tmp_path)]) == 0
    return ET.parse(str(tmp_path / (name + ".svg"))).getroot()


def test_failover_draws_every_trial(tmp_path):
    root = render(tmp_path, "failover", FAILOVER)
    circles = root.findall(".//%scircle" % SVG)
    assert len(circles) == 8
    assert sum(1 for c in circles if c.get("fill") == "none") == 2   # the hangs, hollow
    texts = [t.text for t in root.iter("%stext" % SVG)]
    assert "p50 1.1 s" in texts and "p50 11.0 s" in texts


def test_energy_draws_each_battery_board_under_both_policies(tmp_path):
    root = render(tmp_path, "energy", ENERGY)
    lines = root.findall(".//%spolyline" % SVG)
    assert len(lines) == 4
    assert any("25.0 h" in (t.text or "") and "13.9 h" in (t.text or "") for t in root.iter("%stext" % SVG))


def test_rollout_draws_a_row_per_node_and_a_gate_per_wave(tmp_path):
    root = render(tmp_path, "rollout", ROLLOUT)
    texts = [t.text for t in root.iter("%stext" % SVG)]
    assert {"n-1", "n-2", "n-3", "canary", "wave 2", "gate 1", "gate 2"} <= set(texts)
    bars = [r for r in root.findall(".//%srect" % SVG) if r.get("fill") in ("#2a6fb0", "#2f8a4b")]
    assert len(bars) == 2 * 3 + 2   # sent->switching and switching->confirmed per node, and the legend's two


def test_a_json_line_without_the_data_is_refused_by_name(tmp_path):
    data = {k: v for k, v in FAILOVER.items() if k != "kill_trials_s"}
    with pytest.raises(SystemExit, match="the failover JSON has no kill_trials_s"):
        render(tmp_path, "failover", data)
