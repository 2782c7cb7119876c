# Small JSON records on flash, replaced atomically: write a temp file, then rename over the old
# one, so a power cut leaves either the old or the new record, never a torn one.
import json
import os


def read(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.rename(tmp, path)


def ensure_dir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass  # exists already


def next_boot(data_dir):
    """Increment and persist the boot counter; returns this boot's number (1 on a fresh flash)."""
    ensure_dir(data_dir)
    path = data_dir + "/boot.json"
    boot = read(path, {"boot": 0}).get("boot", 0) + 1
    write(path, {"boot": boot})
    return boot
