# Finishing a board's migration from the shared HMAC key to Ed25519 (docs/ota.md, "Migrating
# HMAC boards"). Loaded by health.guard only on a board with no public key at its flash root.
import os

from . import slots
from .health import KEY_FILE

# What boards held before: the shared HMAC key, deleted once the public key is installed.
LEGACY_KEY_FILE = "fleet.key"


def _exists(path):
    try:
        open(path).close()
        return True
    except OSError:
        return False


def adopt_public_key(root, pointer):
    """Finish a migration from HMAC (docs/ota.md): a board with no public key at its flash root,
    running a confirmed slot that brought one (the HMAC-signed migration bundle), installs it
    there - a temp file, then a rename - and deletes the old shared fleet key. Does nothing on a
    board that has a public key already: no bundle can replace it. Returns True if it did."""
    target = slots.slot_dir(root, KEY_FILE)
    if pointer.get("tentative") or _exists(target):
        return False
    try:
        with open(slots.slot_dir(slots.slot_dir(root, pointer["active"]), KEY_FILE)) as f:
            text = f.read()
    except OSError:
        return False
    with open(target + ".tmp", "w") as f:
        f.write(text)
    os.rename(target + ".tmp", target)
    try:
        os.remove(slots.slot_dir(root, LEGACY_KEY_FILE))
    except OSError:
        pass
    return True
