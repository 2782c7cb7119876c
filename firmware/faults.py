# Fault injection, for tests and for operators checking that a board recovers: only on nodes
# whose config sets "allow_faults": true. Loaded on first use; a board that never injects a
# fault never holds this module in its heap.
#
#   raise   the workload's next inference raises (a crash; the supervisor restarts the worker)
#   crashloop  every inference of the workload raises, restart after restart, until the
#           supervisor gives it up and the node reports itself degraded
#   hang    the workload stops beating: its loop livelocks (and, on Linux, its inference
#           process spins in an endless loop); the supervisor kills and restarts it
#   kill    SIGKILL the workload's inference process (Linux nodes)
#   segv    SIGSEGV the workload's inference process, as a native crash (Linux nodes)
#   freeze  the whole event loop spins forever; only the (hardware) watchdog ends that
#   panic   the node's runtime itself fails (an error escapes its root supervisor): the node
#           records a crash and resets the board
#   flood   the node writes `lines` console lines (default 100), `every_ms` apart (default 0:
#           at once): a chatty node, held to the log topic's rate and ring (firmware/console.py)
import asyncio

KINDS = ("raise", "crashloop", "hang", "kill", "segv", "freeze", "panic", "flood")


def inject(node, args):
    """Arm the fault `args` names; (True, what was done) or (False, why not)."""
    if not node.cfg.get("allow_faults"):
        return False, "fault injection is off on this node (its config does not set allow_faults)"
    kind = args.get("kind")
    if kind not in KINDS:
        return False, "unknown fault %r (one of %s)" % (kind, ", ".join(KINDS))
    if kind == "freeze":
        asyncio.create_task(_freeze_soon())
        return True, "event loop freezes in 200 ms"
    if kind == "panic":
        asyncio.create_task(_panic_soon(node))
        return True, "node runtime fails in 200 ms"
    if kind == "flood":
        lines, every_ms = args.get("lines", 100), args.get("every_ms", 0)
        if not isinstance(lines, int) or not isinstance(every_ms, int) or not 0 < lines <= 10000 or every_ms < 0:
            return False, "flood takes lines (1 to 10000) and every_ms (>= 0), as integers"
        asyncio.create_task(_flood(lines, every_ms))
        return True, "writing %d console lines, %d ms apart" % (lines, every_ms)
    wid = args.get("wl")
    worker = node.workers.get(wid) if wid else None
    if worker is None:
        return False, "no workload %r running on this node" % (wid,)
    if kind in ("raise", "crashloop", "hang"):
        worker.fault = kind
        return True, "%s armed in workload %s" % (kind, wid)
    if not worker.isolate or worker.model is None or not hasattr(worker.model, "signal"):
        return False, "workload %s has no inference process to signal (it runs in the node's event loop)" % wid
    import signal
    worker.model.signal(signal.SIGKILL if kind == "kill" else signal.SIGSEGV)
    return True, "sent %s to workload %s's inference process" % ("SIGKILL" if kind == "kill" else "SIGSEGV", wid)


async def _freeze_soon():
    await asyncio.sleep(0.2)   # the reply goes out first
    while True:
        pass


async def _panic_soon(node):
    await asyncio.sleep(0.2)
    node.supervisor.fail(InjectedPanic("injected panic"))


async def _flood(lines, every_ms):
    from .console import say
    await asyncio.sleep(0.2)   # the reply goes out first
    for i in range(1, lines + 1):
        say("edgefleet-node: flood line %d of %d" % (i, lines))
        if every_ms:
            await asyncio.sleep(every_ms / 1000)


class InjectedPanic(Exception):
    pass
