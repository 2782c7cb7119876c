"""Names a user gives that must be one of what exists: models, boards, runtimes, power sources.

Each check raises ConfigError naming the valid choices, so a typo in a flag or a fleet file is
caught before anything is written or sent, not discovered as a silently empty bundle or a
workload no node can ever take.
"""
from edgefleet import models as models_pkg
from edgefleet.boards import catalog
from edgefleet.firmware.protocol import POWER_SOURCES

from .errors import ConfigError

RUNTIMES = ("micropython", "cpython")


def _unknown(what, value, valid, where=None):
    prefix = "%s: " % where if where else ""
    return ConfigError("%sunknown %s %r (choose from: %s)" % (prefix, what, value, ", ".join(valid) or "none"))


def check_models(names, where=None):
    """`names` (a list, or None for all) with each one a bundled model or one the user added (edgefleet.models.names())."""
    if names is None:
        return None
    known = models_pkg.names()
    for name in names:
        if name not in known:
            raise _unknown("model", name, known, where)
    return list(names)


def check_mcu_models(names, board):
    """`names` (None for all) without a model the MCU engine cannot run (`edgefleet model add
    --pi-only`): named ones are refused, and the default "all" leaves those out."""
    manifests = models_pkg.manifests()
    pi_only = [n for n in manifests if manifests[n].get("mcu_placeable") is False]
    if names is None:
        return [n for n in manifests if n not in pi_only] if pi_only else None
    refused = [n for n in names if n in pi_only]
    if refused:
        raise ConfigError("%s: %s run%s on Pi-class boards only (added with --pi-only)" % (
            board, ", ".join(refused), "s" if len(refused) == 1 else ""))
    return names


def check_board(name, runtime=None, where=None):
    """The profile of board `name`; with `runtime`, it must be a board of that runtime."""
    known = [p["name"] for p in catalog.all_profiles() if runtime is None or p["runtime"] == runtime]
    if name not in known:
        raise _unknown("%sboard" % ("%s " % runtime if runtime else ""), name, known, where)
    return catalog.load(name)


def check_runtime(value, where=None):
    if value not in RUNTIMES:
        raise _unknown("runtime", value, RUNTIMES, where)
    return value


def check_power_source(value, where=None):
    if value not in POWER_SOURCES:
        raise _unknown("power source", value, POWER_SOURCES, where)
    return value
