# The tentative boot (docs/ota.md): a freshly switched slot must prove itself healthy - link
# up, the supervision tree's critical children beating, every assigned workload running and past
# its first inference - within the window the update set, or the node reverts to the previous
# slot by itself and reboots.
#
# report() is the one builder of the node's `ota_state` messages, for the updates OtaAgent
# receives (firmware/ota.py) too: a node takes updates only from A/B slots, and a node booted
# from a slot has this module in its heap from boot on, so the update path loads nothing more.
import asyncio
import os

from . import protocol, slots
from .clock import ticks_diff, ticks_ms

POLL_MS = 200
# The controller's Ed25519 public key (64 hex digits) next to config.json: bundles must verify
# under it (firmware/ota.py). The signing key never leaves the controller host.
KEY_FILE = "sign.pub"
# What boards held before: the shared HMAC key, deleted once the public key is installed.
LEGACY_KEY_FILE = "fleet.key"


def healthy(node):
    if not node.online():
        return False
    if node.safe_mode or node.degraded is not None or not node.supervisor.critical_fresh()[0]:
        return False
    for wid in node.workers:
        worker = node.workers[wid]
        if worker.state != "running" or worker.n < 1:
            return False
    return True


def report(node, state):
    """Queue an `ota_state` report: `state` holds id, state, off and, where known, ver and err."""
    msg = {"v": protocol.VERSION, "node": node.id, "boot": node.boot}
    msg.update(state)
    node.queue("ota_state", msg)


def _report(node, state, bundle_id, version, err=None):
    msg = {"id": bundle_id or "", "state": state, "off": 0, "ver": version or ""}
    if err:
        msg["err"] = err
    report(node, msg)


async def guard(node, root="."):
    """Run once per boot: report a revert the selector made, confirm or revert a tentative slot."""
    pointer = slots.read(root)
    if pointer is None:
        return
    reverted = pointer.get("reverted")
    if reverted:
        pointer = dict(pointer)
        pointer["reverted"] = None
        slots.write(root, pointer)
        msg = "version %s reverted: %s" % (reverted.get("ver"), reverted.get("why"))
        node.event("error", "ota_reverted", msg, {"id": reverted.get("id") or "", "ver": reverted.get("ver")})
        _report(node, "reverted", reverted.get("id"), reverted.get("ver"), reverted.get("why"))
    if not pointer.get("tentative"):
        adopt_public_key(root, pointer)
        return
    started = ticks_ms()
    window = pointer.get("window_ms") or slots.DEFAULT_WINDOW_MS
    while True:
        await asyncio.sleep(POLL_MS / 1000)
        if healthy(node):
            current = slots.read(root) or pointer
            slots.write(root, slots.confirm(current))
            adopt_public_key(root, current)
            node.event("info", "ota_confirmed", "version %s healthy; update confirmed" % pointer["ver"].get(pointer["active"]))
            active = pointer["active"]
            _report(node, "confirmed", pointer.get("ids", {}).get(active), pointer["ver"].get(active))
            return
        if ticks_diff(ticks_ms(), started) > window:
            why = "not healthy within %d ms" % window
            detail = []
            for wid in node.workers:
                w = node.workers[wid]
                detail.append("%s %s n=%d %s" % (wid, w.state, w.n, w.err or ""))
            if detail:
                why += " (" + "; ".join(detail) + ")"
            slots.write(root, slots.revert(slots.read(root) or pointer, why))
            node.event("error", "ota_reverting", why)
            await node.reboot_soon("update reverted: " + why)
            return


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
