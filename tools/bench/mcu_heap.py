#!/usr/bin/env python3
"""The MicroPython node's heap: what the runtime holds after boot, and the smallest
`-X heapsize` at which a node boots, connects and serves a real workload (bisected), per model.
The board profiles' heaps are printed beside them as the baseline the firmware must fit.

Code in ROM (issue 17, docs/ota.md): the runtime's heap after boot on each MCU profile with its
code loaded from .mpy files and executed in place from the slot's ROMFS image, in the same run,
and what each firmware module costs the heap imported alone (with what it imports), both ways,
under the real interpreter.

Last line: {"boot_heap_used", "min_heap": {model: bytes},
            "profiles": {board: {"heap_bytes", "runtime_heap_bytes", "romfs_runtime_heap_bytes",
                                 "romfs_saving_bytes"}},
            "components": {module: bytes from files}, "components_romfs": {module: bytes from ROM},
            "components_unimportable": {module: why}, "romfs_image_bytes",
            "files_heap_bytes", "romfs_heap_bytes"}   (the last two: rpi-pico-w's runtime after boot)
"""
import json
import os
import subprocess
import sys
import tempfile

from edgefleet.boards import catalog
from edgefleet.controller.broker import MosquittoBroker
from edgefleet.controller.extras import micropython_binary
from edgefleet.controller.install import image, romfs
from edgefleet.controller.sim.nodeprobe import NodeProbe

STEP = 4096
RESULTS_NEEDED = 5
ROM_BOARDS = ("rpi-pico-w", "esp32")
# Imports one module and prints the heap it holds after a collection; argv: module [rom image].
# Its packages are imported first, so each module's figure leaves out the __init__s it shares
# with its siblings (firmware.engine's figure holds what the package itself imports).
IMPORT_PROBE = """
import gc, sys
sys.path.insert(0, ".")
if len(sys.argv) > 2:
    import vfs
    with open(sys.argv[2], "rb") as f:
        rom = f.read()
    vfs.mount(vfs.VfsRom(rom), "/rom")
    sys.path.insert(0, "/rom")
import firmware, boards
package = sys.argv[1].rpartition(".")[0]
if package:
    __import__(package)
gc.collect()
before = gc.mem_alloc()
__import__(sys.argv[1])
gc.collect()
print(gc.mem_alloc() - before)
"""


def serves(broker, heap, model, attempt):
    workload = [{"id": "w", "model": model, "rate": 20, "input": {"kind": "samples"}}]
    with tempfile.TemporaryDirectory() as root:
        probe = NodeProbe(broker, root, "heap-%d-%d" % (heap, attempt), "rpi-pico-w", heap_override=heap)
        with probe.start(workload):
            ok = probe.wait_for(lambda p: len(p.of_kind("result")) >= RESULTS_NEEDED, 20)
            boot = probe.boot_event()
            return bool(ok), boot["data"]["heap_used"] if boot else None


def smallest_heap(broker, model, low, high):
    """Bisect between a heap known to fail (low) and one known to work (high)."""
    attempt = 0
    while high - low > STEP:
        mid = (low + high) // 2 // 1024 * 1024
        attempt += 1
        ok, _ = serves(broker, mid, model, attempt)
        print("%s at %d bytes: %s" % (model, mid, "serves" if ok else "fails"), file=sys.stderr)
        if ok:
            high = mid
        else:
            low = mid
    return high


def runtime_heap(broker, board, store):
    """The node's heap in use after boot (boot event) at its profile's heap, no workload."""
    with tempfile.TemporaryDirectory() as root:
        probe = NodeProbe(broker, root, "rom-%s-%s" % (store, board.replace("rpi-", "")), board, code_store=store)
        with probe.start([]):
            boot = probe.wait_for(lambda p: p.boot_event(), 30)
            if boot is None:
                raise SystemExit("%s from %s: no boot event" % (board, store))
            return boot["data"]["heap_used"]


def module_names(slot_dir):
    names = []
    for rel in sorted(romfs.tree_files(slot_dir, dirs=("firmware", "boards"))):
        if rel.endswith(".mpy"):
            name = rel[:-4].replace("/", ".")
            names.append(name[:-len(".__init__")] if name.endswith(".__init__") else name)
    return [n for n in names if n not in ("firmware", "boards")]


def component_heap(slot_dir, rom_path):
    """({module: bytes from files}, {module: bytes from ROM}, {module: why it cannot import})."""
    micropython = micropython_binary()
    script = os.path.join(slot_dir, "..", "import_probe.py")
    with open(script, "w") as f:
        f.write(IMPORT_PROBE)
    files, rom, unimportable = {}, {}, {}
    for name in module_names(slot_dir):
        for store, extra in ((files, []), (rom, [rom_path])):
            out = subprocess.run([micropython, "-X", "heapsize=1048576", script, name] + extra, cwd=slot_dir,
                                 capture_output=True, text=True, timeout=60)
            lines = out.stdout.strip().splitlines()
            if out.returncode != 0 or not lines:
                unimportable[name] = (out.stdout + out.stderr).strip().splitlines()[-1:] or ["exit %d" % out.returncode]
                unimportable[name] = unimportable[name][0]
                break
            store[name] = int(lines[-1])
    return files, rom, unimportable


def main():
    profiles = {p["name"]: p["heap_bytes"] for p in catalog.all_profiles() if p["runtime"] == "micropython"}
    broker = MosquittoBroker().start()
    try:
        ok, boot_used = serves(broker, max(profiles.values()), "digits_dense", 0)
        if not ok:
            raise SystemExit("the node does not serve even at %d bytes" % max(profiles.values()))
        report = {"boot_heap_used": boot_used, "min_heap": {}, "profiles": {}}
        for board, heap in sorted(profiles.items()):
            entry = {"heap_bytes": heap}
            if board in ROM_BOARDS:
                entry["runtime_heap_bytes"] = runtime_heap(broker, board, "files")
                entry["romfs_runtime_heap_bytes"] = runtime_heap(broker, board, "romfs")
                entry["romfs_saving_bytes"] = entry["runtime_heap_bytes"] - entry["romfs_runtime_heap_bytes"]
                print("%s: %s" % (board, entry), file=sys.stderr)
            report["profiles"][board] = entry
        for model in ("digits_dense", "digits_conv"):
            report["min_heap"][model] = smallest_heap(broker, model, 32 * 1024, max(profiles.values()))
    finally:
        broker.stop()
    with tempfile.TemporaryDirectory() as root:
        image.write_slot_set(root, catalog.load("rpi-pico-w"), simulated=True)
        slot_dir = os.path.join(root, image.FIRST_SLOT)
        data = romfs.pack_slot(slot_dir)
        rom_path = os.path.join(root, "slot.rom")
        with open(rom_path, "wb") as f:
            f.write(data)
        code_only = romfs.pack(romfs.tree_files(slot_dir, dirs=("firmware", "boards")))
        files, rom, unimportable = component_heap(slot_dir, rom_path)
    pico = report["profiles"]["rpi-pico-w"]
    report.update({"components": files, "components_romfs": rom, "components_unimportable": unimportable,
                   "romfs_image_bytes": len(data), "romfs_code_bytes": len(code_only),
                   "files_heap_bytes": pico["runtime_heap_bytes"], "romfs_heap_bytes": pico["romfs_runtime_heap_bytes"]})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
