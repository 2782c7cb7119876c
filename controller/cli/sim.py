"""`edgefleet sim`: change a simulated board's sim.json (boards/hal_sim.py reads it), found
through the board index the demo and SimFleet keep ($EDGEFLEET_HOME/demo/simboards.json)."""
import json

from ..choices import check_power_source
from ..errors import ConfigError, NotFound

SIM_SETTINGS = {
    # name: (sim.json key, parser, help)
    "load": ("load", "percent", "injected CPU load in percent (0-100)"),
    "battery": ("battery_pct", "percent", "battery level in percent (0-100)"),
    "source": ("source", "source", "power source: mains, battery or solar"),
    "temp": ("temp", "number", "temperature in C"),
    "throttle": ("throttled", "onoff", "thermal throttling: on or off"),
    "solar": ("solar_mw", "number", "solar harvest in mW"),
    "time-scale": ("time_scale", "number", "simulated seconds per real second for the power model"),
}


def _parse_sim_value(kind, text):
    if kind == "source":
        return check_power_source(text)
    if kind == "onoff":
        if text not in ("on", "off"):
            raise ConfigError("throttle takes on or off, not %r" % text)
        return text == "on"
    try:
        value = float(text)
    except ValueError:
        raise ConfigError("%r is not a number" % text) from None
    if kind == "percent" and not 0 <= value <= 100:
        raise ConfigError("%s is not a percentage (0-100)" % text)
    return value


def cmd_sim(args):
    from ..sim.simfleet import default_index_path, read_index, write_sim_settings
    key, kind, _ = SIM_SETTINGS[args.setting]
    value = _parse_sim_value(kind, args.value)
    index_path = args.boards or default_index_path()
    index = read_index(index_path)
    if args.node not in index:
        raise NotFound("no simulated board %r in %s (boards: %s)" % (
            args.node, index_path, ", ".join(sorted(index)) or "none; is `edgefleet demo` running?"))
    settings = write_sim_settings(index[args.node], {key: value})
    print("edgefleet: %s sim %s" % (args.node, json.dumps(settings, sort_keys=True)))
    return 0


def register(sub):
    s = sub.add_parser("sim", help="change a simulated board: load, battery, power source, temperature")
    s.add_argument("setting", choices=sorted(SIM_SETTINGS), help="; ".join("%s: %s" % (k, v[2]) for k, v in sorted(SIM_SETTINGS.items())))
    s.add_argument("node")
    s.add_argument("value")
    s.add_argument("--boards", help="simulated board index (default: the demo's, $EDGEFLEET_HOME/demo/simboards.json)")
    s.set_defaults(func=cmd_sim)
