# Small JSON records on flash, replaced atomically: write a temp file, then rename over the old
# one, so a power cut leaves either the old or the new record, never a torn one. The temp file
# reaches the flash (fsync where the runtime has one; MicroPython's littlefs commits on close)
# before the rename makes it the record.
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
        if hasattr(os, "fsync"):
            f.flush()
            os.fsync(f.fileno())
    os.rename(tmp, path)


def ensure_dir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass  # exists already


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False
