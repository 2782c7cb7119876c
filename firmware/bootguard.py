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
# KB of heap counts on a microcontroller). start() is the node's boot sequence.
from . import flashfile, release_module

FILE = "/bootguard.json"
# Reset causes that mean the code failed: the node's own records, or the board's register
# ("soft" is what MCU ports report after a panic).
FAULTS = ("crash", "watchdog", "soft")


def start(node):
    """Boot: count the boot, learn why the last one ended, decide on safe mode, recover the
    outbox, report, and apply the assignment cached on flash."""
    # Results of earlier boots still on flash: delivered like new ones. Recovered first: their
    # boots, and those of the crash and boot records, are a floor for the boot counter.
    node.recovered = node.outbox.recover()
    node.boot = flashfile.next_boot(node.data_dir, highest_boot(node.data_dir, node.recovered))
    info = node.reset_info = on_boot(node.data_dir, node.boot, node.hal.reset_cause(), node.sup_cfg["quick_boot_limit"])
    from . import backends
    node.backends = backends.available(node.runtime)
    release_module(backends)   # back when a workload needs it
    node.safe_mode = info["safe_mode"]
    if node.safe_mode:
        node.state = "safe"
    node.meter.install()
    free, total = node.hal.mem()
    # The runtime's own footprint, before any workload: what a board must spare for it.
    heap_used = total - free
    print("edgefleet-node: %s (%s, %s) boot %d (reset: %s), heap in use %d of %d" % (
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
            print("edgefleet-node: ignoring cached assignment: %s" % e)


def highest_boot(data_dir, recovered):
    """The highest boot named by the outbox's results (recovered: boot -> seq), the crash records
    and the last boot record."""
    from . import crashlog
    records = crashlog.read(data_dir) + [flashfile.read(data_dir + FILE)]
    release_module(crashlog)
    top = max(list(recovered) + [0])
    for r in records:
        boot = r.get("boot") if isinstance(r, dict) else None
        if isinstance(boot, int) and boot > top:
            top = boot
    return top


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
