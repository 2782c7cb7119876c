"""Board profiles: data files in boards/profiles/, loaded and checked on the host side."""
import json
import os

from .errors import ProfileError

PROFILE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profiles")
REQUIRED = ("name", "kind", "runtime", "cpu", "ram_bytes", "heap_bytes", "flash_bytes", "fs_bytes", "power")


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
    return profile


def all_profiles():
    return [load(n) for n in names()]
