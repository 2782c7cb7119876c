# A board's update life on real flash files, forever, for the power-cut test
# (tests/test_ota_power_cut.py): boot through the slot selector, confirm the tentative slot
# (unless it is one of the versions that never get healthy), then receive the next bundle
# chunk by chunk from a recorded stream and switch to it. The test SIGKILLs this at random.
#
#   micropython ota_replay.py ROOT BUNDLE_A BUNDLE_B
import binascii
import gc
import random
import sys

from firmware import slots
from firmware.ota import Receiver, raise_floor

# A simulated ROM partition's driver (controller/sim/mcu_rom/ef_romsim.py) is there from
# power-on, as a simulated board's ef_simboot.py loads it and a real board has rom_ioctl built
# in: imported now, into an empty heap, its compiling is not charged to one an update has filled.
try:
    import os
    if os.getenv("EDGEFLEET_SIM_ROM"):
        import ef_romsim  # noqa: F401 - romslot.rom_ioctl() finds it in sys.modules
except ImportError:
    pass

CHUNK = 1536


def stream(rx, bundle_id, path, size):
    rx.handle({"v": 1, "id": bundle_id, "op": "begin", "size": size, "window_ms": 1000})
    off = 0
    # One buffer for every chunk: this loop is the harness, not the board, and must not be the
    # one to fragment a 96 KB heap over many boots.
    buf = bytearray(CHUNK)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            report = rx.handle({"v": 1, "id": bundle_id, "op": "chunk", "off": off,
                                "data": binascii.b2a_base64(memoryview(buf)[:n]).decode().strip()})[0]
            off += n
            if report["state"] not in ("receiving", "switching"):
                raise SystemExit("update refused: %r" % report)


def healthy(bundle_id):
    # One update in three is a version that never gets healthy: the selector must revert it.
    return sum(bundle_id.encode()) % 3 != 0


def size_of(path):
    import os
    return os.stat(path)[6]


def main(root, paths):
    sizes = [size_of(p) for p in paths]
    boots = 0
    while True:
        boots += 1
        gc.collect()   # a reboot starts from an empty heap; this loop only stands for one
        slot, pointer = slots.select(root)
        if pointer.get("tentative") and healthy(pointer["ids"][pointer["active"]]):
            slots.write(root, slots.confirm(pointer))
        pointer = slots.read(root)
        if pointer.get("tentative"):
            continue   # not healthy: a node refuses updates then, and reboots (revert in time)
        running = pointer["ver"].get(pointer["active"])
        i = 1 if running == "A" else 0
        # Two recorded bundles (seq 1 and 2) stand for an endless run of ever newer ones: the
        # harness, not the node, lowers the floor again (with the node's atomic write, which a
        # kill may interrupt too).
        raise_floor(root, 0, "")
        rx = Receiver(root, "rpi-pico-w", "micropython")
        stream(rx, "bundle-%d-%d-%d" % (i, boots, random.getrandbits(16)), paths[i], sizes[i])
        print("boot", boots, "ran", running, "switched", rx.switched)


main(sys.argv[1], sys.argv[2:4])
