# A/B slots: the node's code and models live in slot_a/ or slot_b/, and one small pointer file
# (slots.json, next to config.json) says which one boots. The pointer is the only thing an
# update switches, with one atomic write (temp file + rename), so a power cut at any moment
# leaves either the old or the new pointer, each naming a slot that was complete when written.
#
# This module is self-contained (json and os only): a board also keeps a copy of it outside
# the slots, as the stable boot selector its main.py imports before any slot is on sys.path.
# The decisions are pure functions over the pointer dict; read()/write() do the flash I/O.
import json
import os

POINTER = "slots.json"
SLOTS = ("slot_a", "slot_b")
# Boots a tentative slot gets without confirming before the selector reverts to the previous
# slot: covers versions that crash or hang before their health check can run.
MAX_TRIES = 3
DEFAULT_WINDOW_MS = 60000


def initial(slot, version, bundle_id=""):
    return {"active": slot, "prev": None, "tentative": False, "tries": 0, "window_ms": DEFAULT_WINDOW_MS,
            "ver": {slot: version}, "ids": {slot: bundle_id}, "reverted": None}


def other(slot):
    return SLOTS[1] if slot == SLOTS[0] else SLOTS[0]


def valid(pointer):
    return (isinstance(pointer, dict) and pointer.get("active") in SLOTS
            and pointer.get("prev") in (None, SLOTS[0], SLOTS[1]) and isinstance(pointer.get("ver"), dict))


def _copy(pointer):
    return json.loads(json.dumps(pointer))


def on_boot(pointer, max_tries=MAX_TRIES):
    """The boot selector's decision: (pointer to write or None, slot to boot).

    A tentative slot gets max_tries boots to confirm itself; past that the previous slot boots
    again and the failed version is remembered in 'reverted' for the node to report."""
    if not pointer.get("tentative"):
        return None, pointer["active"]
    out = _copy(pointer)
    out["tries"] = out.get("tries", 0) + 1
    if out["tries"] > max_tries and out.get("prev"):
        out = revert(out, "did not confirm within %d boots" % max_tries)
    return out, out["active"]


def revert(pointer, why):
    """Back to the previous slot; the failed slot is no rollback target any more."""
    if not pointer.get("prev"):
        return confirm(pointer)   # nothing to go back to: keep the only slot there is
    out = _copy(pointer)
    failed = out["active"]
    out["reverted"] = {"slot": failed, "ver": out["ver"].get(failed), "id": out.get("ids", {}).get(failed),
                       "why": why}
    out["active"], out["prev"] = out["prev"], None
    out["tentative"], out["tries"] = False, 0
    return out


def staging(pointer):
    """Before the inactive slot is overwritten: it stops being a rollback target."""
    out = _copy(pointer)
    target = other(out["active"])
    if out.get("prev") == target:
        out["prev"] = None
    out["ver"].pop(target, None)
    out.setdefault("ids", {}).pop(target, None)
    return out, target


def switch(pointer, slot, version, bundle_id, window_ms):
    """Make a fully written and verified slot active, tentatively."""
    out = _copy(pointer)
    out["prev"], out["active"] = out["active"], slot
    out["tentative"], out["tries"] = True, 0
    out["window_ms"] = window_ms
    out["ver"][slot] = version
    out.setdefault("ids", {})[slot] = bundle_id
    out["reverted"] = None
    return out


def confirm(pointer):
    out = _copy(pointer)
    out["tentative"], out["tries"] = False, 0
    return out


def rollback(pointer):
    """The operator's rollback: swap to the previous slot, keeping the current as the new
    previous, both confirmed. None where there is no previous slot."""
    if not pointer.get("prev"):
        return None
    out = _copy(pointer)
    out["active"], out["prev"] = out["prev"], out["active"]
    out["tentative"], out["tries"] = False, 0
    return out


# -- flash I/O ---------------------------------------------------------------------------

def path(root):
    return POINTER if root in ("", ".") else root + "/" + POINTER


def read(root="."):
    """The pointer, or None on a flash without slots (or with an unreadable pointer)."""
    try:
        with open(path(root)) as f:
            pointer = json.load(f)
    except (OSError, ValueError):
        return None
    return pointer if valid(pointer) else None


def write(root, pointer):
    target = path(root)
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(pointer))
    os.rename(tmp, target)


def slot_dir(root, slot):
    return slot if root in ("", ".") else root + "/" + slot


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def select(root="."):
    """Run at every boot: apply on_boot, persist it, return (slot dir, pointer); None without slots.

    A pointer that cannot be read (it is only ever replaced by rename, so this takes a damaged
    flash) falls back to the first slot holding a complete manifest ("MANIFEST", written last
    when a slot is unpacked)."""
    pointer = read(root)
    if pointer is None:
        for slot in SLOTS:
            if _exists(slot_dir(root, slot) + "/MANIFEST"):
                pointer = initial(slot, "unknown")
                write(root, pointer)
                return slot_dir(root, slot), pointer
        return None
    new, slot = on_boot(pointer)
    if new is not None:
        write(root, new)
        pointer = new
    return slot_dir(root, slot), pointer


def remove_tree(top):
    """Delete a slot folder and everything in it (no shutil on MicroPython)."""
    try:
        entries = os.listdir(top)
    except OSError:
        return
    for name in entries:
        full = top + "/" + name
        try:
            os.remove(full)
        except OSError:
            remove_tree(full)
    try:
        os.rmdir(top)
    except OSError:
        pass
