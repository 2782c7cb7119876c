# Small JSON records on flash, replaced atomically: write a temp file, then rename over the old
# one, so a power cut leaves either the old or the new record, never a torn one. The temp file
# reaches the flash (fsync where the runtime has one; MicroPython's littlefs commits on close)
# before the rename makes it the record.
import json
import os

_fsync = getattr(os, "fsync", None)


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
        f.flush()
        if _fsync is not None:
            _fsync(f.fileno())
    os.rename(tmp, path)


def ensure_dir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass  # exists already


def next_boot(data_dir, floor=0):
    """Increment and persist the boot counter; returns this boot's number (1 on a fresh flash).
    floor: the highest boot other records on flash name; a lost or damaged counter restarts
    above it, so (node, boot, seq) never repeats."""
    ensure_dir(data_dir)
    path = data_dir + "/boot.json"
    last = read(path)
    last = last.get("boot") if isinstance(last, dict) else None
    boot = max(last if isinstance(last, int) else 0, floor) + 1
    write(path, {"boot": boot})
    return boot
