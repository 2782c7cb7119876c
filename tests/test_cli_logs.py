"""`edgefleet logs NODE`: a node's boots with their reset causes, crashes, hangs and escalations,
as the controller stored them from the node's events."""
import json

import pytest

from edgefleet.controller import cli
from edgefleet.controller.errors import EXIT_CONFIG
from edgefleet.controller.fleet.controller import FleetController
from edgefleet.controller.store import open_registry

from test_controller import hello


def _event(node, kind, msg, data, boot=2, level="error"):
    return json.dumps({"v": 1, "node": node, "boot": boot, "up": 1234, "level": level, "kind": kind,
                       "msg": msg, "data": data})


@pytest.fixture
def registry_path(tmp_path):
    path = str(tmp_path / "fleet.db")
    registry = open_registry(path)
    ctl = FleetController(registry)
    ctl.handle("ef/node/mcu-1/hello", hello("mcu-1", boot=2))
    ctl.handle("ef/node/mcu-1/event", _event("mcu-1", "boot", "boot 2 after watchdog reset",
                                             {"reset": "watchdog", "reset_detail": "critical child delivery silent",
                                              "quick_boots": 1, "safe_mode": False}, level="info"))
    ctl.handle("ef/node/mcu-1/event", _event("mcu-1", "crash", "w: InjectedFault: boom",
                                             {"child": "w", "how": "crash", "boot": 2, "up": 1200}))
    ctl.handle("ef/node/mcu-1/event", _event("mcu-1", "degraded", "gave up w: 5 restarts within 60 s", {"child": "w"}))
    ctl.handle("ef/node/mcu-1/event", _event("mcu-1", "assigned", "epoch 3", None, level="info"))
    registry.close()
    return path


def test_logs_show_reset_causes_crashes_and_escalations(registry_path, capsys):
    assert cli.main(["logs", "mcu-1", "--db", registry_path]) == 0
    out = capsys.readouterr().out
    assert "reset: watchdog (critical child delivery silent)" in out
    assert "w: InjectedFault: boom" in out and "[boot 2]" in out
    assert "gave up w" in out
    assert "epoch 3" not in out, "a non-supervision event shown without --all"
    assert cli.main(["logs", "mcu-1", "--db", registry_path, "--all"]) == 0
    assert "epoch 3" in capsys.readouterr().out


def test_logs_json_and_unknown_node(registry_path, capsys):
    assert cli.main(["logs", "mcu-1", "--db", registry_path, "--json"]) == 0
    kinds = [e["kind"] for e in json.loads(capsys.readouterr().out)]
    assert kinds == ["registered", "boot", "crash", "degraded"], kinds
    assert cli.main(["logs", "nope", "--db", registry_path]) == EXIT_CONFIG
    assert "edgefleet: no node 'nope'" in capsys.readouterr().err
