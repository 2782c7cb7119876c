"""Board profiles: data files in boards/profiles/, loaded and checked on the host side."""
import json
import os

from .errors import ProfileError

PROFILE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profiles")
REQUIRED = ("name", "kind", "runtime", "cpu", "ram_bytes", "heap_bytes", "flash_bytes", "fs_bytes", "power")
# Optional "tls": what a TLS link to the broker costs this board's heap beyond plaintext, and
# whether it fits beside the smallest model, as tools/bench/tls.py measured it.
TLS_FIELDS = {"heap_peak_bytes": int, "heap_steady_bytes": int, "fits": bool, "why": str, "measured": str}


def names():
    return sorted(f[:-5] for f in os.listdir(PROFILE_DIR) if f.endswith(".json"))


def load(name):
    path = os.path.join(PROFILE_DIR, name + ".json")
    if not os.path.exists(path):
        raise ProfileError("unknown board %r (known: %s)" % (name, ", ".join(names())))
    with open(path) as f:
        profile = json.load(f)
    missing = [key for key in REQUIRED if key not in profile]
    if missing:
        raise ProfileError("board profile %s lacks %s" % (path, ", ".join(missing)))
    if profile["kind"] not in ("mcu", "linux") or profile["runtime"] not in ("micropython", "cpython"):
        raise ProfileError("board profile %s: kind/runtime must be mcu/micropython or linux/cpython" % path)
    if "tls" in profile:
        _check_tls(path, profile["tls"])
    return profile


def _check_tls(path, tls):
    if not isinstance(tls, dict):
        raise ProfileError("board profile %s: tls must be an object (%s)" % (path, ", ".join(TLS_FIELDS)))
    for key, kind in TLS_FIELDS.items():
        value = tls.get(key)
        # bool is an int in Python: a byte count must not be one.
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
            raise ProfileError("board profile %s: tls.%s must be %s" % (
                path, key, "a byte count" if kind is int else "true or false" if kind is bool else "text"))
    if tls["heap_peak_bytes"] < tls["heap_steady_bytes"]:
        raise ProfileError("board profile %s: tls.heap_peak_bytes is below tls.heap_steady_bytes" % path)


def all_profiles():
    return [load(n) for n in names()]
