# The node's commands (`cmd` messages, docs/protocol.md), each answered with a `reply`.
# Loaded for a command and released after it: commands are rare, heap on an MCU is not.
#
#   ping     uptime
#   info     what hello says, plus free memory and the reset and supervision state
#   reboot   records the cause, then resets the board
#   resume   leaves safe mode: the next boot runs the workloads again
#   crashes  the crash records kept on flash
#   fault    injects a fault, where the config allows it (firmware/faults.py)
import asyncio

from . import protocol


def handle(node, msg):
    op = msg["op"]
    reply = {"v": protocol.VERSION, "id": msg["id"], "ok": True}
    if op == "ping":
        reply["data"] = {"up": node.uptime_ms()}
    elif op == "info":
        data = node.hello()
        data["mem_free"] = node.hal.mem()[0]
        data["state"] = node.state
        data["degraded"] = node.degraded
        data.update(node.reset_info)
        reply["data"] = data
    elif op == "reboot":
        asyncio.create_task(node.reboot_soon("commanded (%s)" % msg["id"]))
    elif op == "resume":
        if not node.safe_mode:
            return _refuse(msg, "not in safe mode")
        # The operator vouches for the code on flash: the next boot starts a fresh count.
        asyncio.create_task(node.reboot_soon("leaving safe mode (%s)" % msg["id"], True))
    elif op == "crashes":
        from . import crashlog
        reply["data"] = {"records": crashlog.read(node.data_dir)}
    elif op == "fault":
        from .faults import inject
        ok, detail = inject(node, msg.get("args") or {})
        if not ok:
            return _refuse(msg, detail)
        reply["data"] = {"detail": detail}
    else:
        return _refuse(msg, "unknown op %r" % op)
    return reply


def _refuse(msg, error):
    return {"v": protocol.VERSION, "id": msg["id"], "ok": False, "error": error}
