# The node's config file on flash: who the node is, which broker, which board.
import json

from .errors import ConfigError
from .protocol import DEFAULT_PREFIX, valid_node_id

DEFAULTS = {
    "topic_prefix": DEFAULT_PREFIX,
    "hb_interval_ms": 1000,
    "models_dir": "models",
    "data_dir": "data",
    "hal": "micropython",
    "hal_options": {},
    "fw": "0.1.0",
    # Supervision limits (firmware/node.py SUPERVISION names them); {} keeps the defaults.
    "supervision": {},
    # Lets `cmd` op "fault" inject crashes and hangs (firmware/faults.py); off on real fleets.
    "allow_faults": False,
}
# tls: verify the broker against the fleet CA in `ca` (DER, next to config.json), as
# `server_name` (default: host) - flash/provision set it wherever the board can hold TLS.
BROKER_DEFAULTS = {"host": "127.0.0.1", "port": 1883, "user": None, "password": None, "keepalive": 10,
                   "tls": False, "ca": "ca.der", "server_name": None}


def _require(cfg, key, kind):
    if key not in cfg:
        raise ConfigError("config: missing '%s'" % key, key)
    if not isinstance(cfg[key], kind):
        raise ConfigError("config: '%s' has the wrong type" % key, key)
    return cfg[key]


def parse(cfg):
    """Validate a config dict and fill in defaults; raises ConfigError naming the bad key."""
    if not isinstance(cfg, dict):
        raise ConfigError("config: must be a JSON object")
    node = _require(cfg, "node", str)
    if not valid_node_id(node):
        raise ConfigError("config: node id %r must be 1-32 chars of a-z 0-9 - _" % node, "node")
    _require(cfg, "board", str)
    profile = _require(cfg, "profile", dict)
    if profile.get("runtime") not in ("micropython", "cpython"):
        raise ConfigError("config: profile.runtime must be micropython or cpython", "profile.runtime")
    out = {}
    for key in DEFAULTS:
        out[key] = cfg.get(key, DEFAULTS[key])
    for key in cfg:
        out[key] = cfg[key]
    broker = {}
    given = cfg.get("broker", {})
    if not isinstance(given, dict):
        raise ConfigError("config: 'broker' must be an object", "broker")
    for key in BROKER_DEFAULTS:
        broker[key] = given.get(key, BROKER_DEFAULTS[key])
    if not isinstance(broker["port"], int) or not 0 < broker["port"] < 65536:
        raise ConfigError("config: broker.port must be 1..65535", "broker.port")
    if not isinstance(broker["keepalive"], int) or broker["keepalive"] < 1:
        raise ConfigError("config: broker.keepalive must be a positive int", "broker.keepalive")
    if not isinstance(broker["tls"], bool):
        raise ConfigError("config: broker.tls must be true or false", "broker.tls")
    if broker["tls"] and not isinstance(broker["ca"], str):
        raise ConfigError("config: broker.ca must name the fleet CA file", "broker.ca")
    out["broker"] = broker
    # Wi-Fi a board joins itself (boards/wifi.py): ssid, password ("" or null: open), country.
    wifi = out.get("wifi")
    if wifi is not None and not (isinstance(wifi, dict) and isinstance(wifi.get("ssid"), str)):
        raise ConfigError("config: 'wifi' must be an object with an 'ssid'", "wifi")
    supervision = out["supervision"]
    if not isinstance(supervision, dict):
        raise ConfigError("config: 'supervision' must be an object", "supervision")
    for key in supervision:
        if not isinstance(supervision[key], int) or supervision[key] < 0:
            raise ConfigError("config: supervision.%s must be a non-negative int" % key, "supervision." + key)
    if not isinstance(out["hb_interval_ms"], int) or not 100 <= out["hb_interval_ms"] <= 1000:
        raise ConfigError("config: hb_interval_ms must be 100..1000 (heartbeats at >= 1 Hz)", "hb_interval_ms")
    return out


def load(path):
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError as e:
        raise ConfigError("config: cannot read %s (%s)" % (path, e))
    except ValueError as e:
        raise ConfigError("config: %s is not valid JSON (%s)" % (path, e))
    return parse(cfg)
