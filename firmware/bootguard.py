# Why the node last reset, and whether it keeps resetting too soon (then it boots in safe mode).
#
# machine.reset_cause() is unreliable on several ports and knows nothing of why the firmware let
# the watchdog fire, so the node writes the cause itself, on flash, before a reset it causes (a
# watchdog it stops feeding, a commanded reboot, the runtime dying). A boot that finds no cause
# recorded ended without warning: a power cut, or a hang that the hardware watchdog ended; the
# HAL's own reset cause, where the board has one, tells those apart.
#
# A boot that reaches the node's stable_after_ms of uptime is marked stable. Boots that a fault
# ended before that (the runtime crashed, the watchdog fired, the board reset itself unasked) are
# counted; after `limit` of them in a row the next boot is a safe-mode boot: only the link and the
# deploy path run, so a bad update can be fixed remotely rather than boot-loop. Power cuts, reset
# buttons and commanded reboots say nothing about the code and leave the count as it was: a
# battery board that browns out every few seconds keeps inferring and buffering.
#
# Used at boot and on the rare occasions the record changes; the node loads it only then (every
# KB of heap counts on a microcontroller). start() is the node's boot sequence; it also decides
# whether firmware/health.py's slot guard has work at this boot (slot_needs_guard).
from . import console, flashfile, release_module

FILE = "/bootguard.json"
# Reset causes that mean the code failed: the node's own records, or the board's register
# ("soft" is what MCU ports report after a panic).
FAULTS = ("crash", "watchdog", "soft")


def start(node):
    """Boot: count the boot, learn why the last one ended, decide on safe mode, recover the
    outbox, report, and apply the assignment cached on flash. Returns whether the slot guard
    (firmware/health.py) has work."""
    # Console lines for the log topic, in a ring of the board profile's size (0: the board
    # has no heap to spare for them; they go to its serial console only).
    lines = node.profile.get("console_lines", 16)
    if lines:
        console.slots = [None] * lines
    node.boot = next_boot(node.data_dir)
    # Read before on_boot replaces it: with no counter on flash, it names the last boot.
    last = flashfile.read(node.data_dir + FILE) if node.boot == 1 else None
    info = node.reset_info = on_boot(node.data_dir, node.boot, node.hal.reset_cause(), node.sup_cfg["quick_boot_limit"])
    from . import backends
    node.backends = backends.available(node.runtime)
    release_module(backends)   # back when a workload needs it
    # The name too: this function still runs when it reports the heap in use, and a local
    # naming the module would keep all of its code in that figure.
    del backends
    node.safe_mode = info["safe_mode"]
    if node.safe_mode:
        node.state = "safe"
    # Results of earlier boots still on flash: delivered like new ones.
    node.recovered = node.outbox.recover()
    if node.boot == 1 and (last is not None or node.recovered):
        # No counter on flash, yet records of earlier boots: a power cut damaged it. Go above
        # every boot they name, or new results repeat (boot, seq) of old ones.
        from . import crashlog
        node.boot = next_boot(node.data_dir, crashlog.highest_boot(node.data_dir, node.recovered, last))
        release_module(crashlog)
        del crashlog
        write(node.data_dir, node.boot, info["quick_boots"], False)
    node.meter.install()
    free, total = node.hal.mem()
    # The runtime's own footprint, before any workload: what a board must spare for it.
    heap_used = total - free
    console.say("edgefleet-node: %s (%s, %s) boot %d (reset: %s), heap in use %d of %d" % (
        node.id, node.cfg["board"], node.runtime, node.boot, info["reset"], heap_used, total))
    data = {"fw": node.cfg["fw"], "heap_used": heap_used, "heap_total": total}
    data.update(info)
    node.event("info", "boot", "boot %d after %s reset" % (node.boot, info["reset"]), data)
    if node.safe_mode:
        node.event("warn", "safe_mode", "%d boots in a row ended within %d s: running only the link and the "
                   "deploy path" % (info["quick_boots"], node.sup_cfg["stable_after_ms"] // 1000))
    # The assignment cached on flash: a node without broker or controller runs what it ran.
    cached = flashfile.read(node.data_dir + "/assign.json")
    if cached is not None:
        from . import protocol
        from .errors import ProtocolError
        try:
            node.apply_assignment(protocol.validate("assign", cached), from_cache=True)
        except ProtocolError as e:
            console.say("edgefleet-node: ignoring cached assignment: %s" % e)
    return bool(node.cfg.get("slot")) and slot_needs_guard(node.cfg["slot"])


def slot_needs_guard(slot):
    # firmware/health.py's guard has work only on a tentative slot, after a revert, or while
    # a migration's public key waits in the slot (firmware/adopt_key.py). Otherwise it stays
    # off the heap: on the smallest board the node connects only without it.
    pointer = flashfile.read("slots.json") or {}   # firmware/slots.py's POINTER
    if pointer.get("tentative") or pointer.get("reverted"):
        return True
    return not flashfile.exists("sign.pub") and flashfile.exists(slot + "/sign.pub")


def next_boot(data_dir, floor=0):
    """Increment and persist the boot counter; returns this boot's number (1 on a fresh flash).
    floor: the highest boot other records on flash name; a lost or damaged counter restarts
    above it, so (node, boot, seq) never repeats. (Here, not in flashfile, which stays loaded.)"""
    flashfile.ensure_dir(data_dir)
    path = data_dir + "/boot.json"
    try:
        boot = max(flashfile.read(path)["boot"], floor) + 1
    except Exception:  # noqa: BLE001 - missing, torn or mangled: start above the floor
        boot = floor + 1
    flashfile.write(path, {"boot": boot})
    return boot


def on_boot(data_dir, boot, hal_cause, limit):
    """Read what the last boot left, count it, and start this boot's record (no cause, unstable)."""
    last = flashfile.read(data_dir + FILE)
    if last is None:
        cause, detail, quick = "first", None, 0
    else:
        cause = last.get("cause") or hal_cause or "power"
        detail = last.get("detail")
        quick = last.get("quick", 0)
        if last.get("stable"):
            quick = 0
        elif cause in FAULTS:
            quick += 1
    write(data_dir, boot, quick, False)
    return {"reset": cause, "reset_detail": detail, "quick_boots": quick, "safe_mode": quick >= limit}


def write(data_dir, boot, quick, stable, cause=None, detail=None):
    """This boot's record: a cause when the node is about to reset the board itself."""
    flashfile.write(data_dir + FILE, {"boot": boot, "cause": cause, "detail": detail, "quick": quick,
                                      "stable": stable})
