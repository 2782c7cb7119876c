# The tentative boot (docs/ota.md): a freshly switched slot must prove itself healthy - link
# up, the supervision tree's critical children beating, every assigned workload running and past
# its first inference - within the window the update set, or the node reverts to the previous
# slot by itself and reboots.
#
# report() is the one builder of the node's `ota_state` messages, for the updates OtaAgent
# receives (firmware/ota.py) too. The node loads this module only when guard() has work (bootguard.
# slot_needs_guard: a tentative slot, a revert to report, a key to adopt) or an update starts,
# and drops it after guard() when no update holds it: on the smallest board it does not fit
# beside a node that is connecting.
import asyncio

from . import protocol, slots
from .clock import ticks_diff, ticks_ms

POLL_MS = 200
# The controller's Ed25519 public key (64 hex digits) next to config.json: bundles must verify
# under it (firmware/ota.py). The signing key never leaves the controller host.
KEY_FILE = "sign.pub"


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
        _adopt_key(root, pointer)
        return
    started = ticks_ms()
    window = pointer.get("window_ms") or slots.DEFAULT_WINDOW_MS
    while True:
        await asyncio.sleep(POLL_MS / 1000)
        if healthy(node):
            current = slots.read(root) or pointer
            slots.write(root, slots.confirm(current))
            _adopt_key(root, current)
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



def _adopt_key(root, pointer):
    # Only a board migrating from the HMAC key lacks a public key at its root; the others pay
    # one open() per boot, and the code that adopts it is loaded only where it is needed.
    try:
        open(slots.slot_dir(root, KEY_FILE)).close()
        return
    except OSError:
        pass
    from . import adopt_key, release_module
    adopt_key.adopt_public_key(root, pointer)
    release_module(adopt_key)
