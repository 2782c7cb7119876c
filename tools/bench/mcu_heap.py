#!/usr/bin/env python3
"""The MicroPython node's heap, per MCU board profile, with the board's code where its profile
puts it (`code_store`: .mpy files loaded into the heap, or executed in place from ROM, docs/ota.md
"Code in ROM"): what the runtime holds after boot, in steady state and at its peak through a
burst of commands (the heartbeats' `mem_low`), what that leaves the models, and which models
placement would put there. Beside it, in the same run, the baseline: the same runtime loaded
from .mpy files, and what each firmware module costs the heap imported alone, both ways, under
the real interpreter. The smallest `-X heapsize` at which a node boots, connects and serves each
model (bisected) closes the run.

The simulated boards run the MicroPython unix port of this venv, a 64-bit program whose
pointers, and so objects, dicts and frames, are twice a real board's. With
EDGEFLEET_MICROPYTHON=path/to/a/32-bit/build (tools/micropython32/build.sh), the same run
measures a board's own word size: "interpreter" says which one a line comes from.

Last line: {"interpreter": {"version", "word_bits", "mpy_arch"},
            "profiles": {board: {"heap_bytes", "code_store", "runtime_heap_bytes",
                                 "runtime_heap_steady_bytes", "runtime_heap_peak_bytes",
                                 "runtime_heap_budget_bytes", "free_for_models_bytes",
                                 "models_placeable", "files_runtime_heap_bytes"}},
            "components": {module: bytes from ROM}, "components_files": {module: bytes from files},
            "components_exclusive": {module: bytes}, "runtime_qstrs",
            "components_unimportable": {module: why}, "romfs_image_bytes",
            "files_heap_bytes", "romfs_heap_bytes", "min_heap": {model: bytes},
            "esp32_rom_serves_from": {model: bytes}, "esp32_rom_model_need": {model: bytes}}
  files_heap_bytes / romfs_heap_bytes: the ESP32's runtime after boot from files / from ROM.
  min_heap: the smallest -X heapsize a Pico W node with its code as files serves each model at;
  esp32_rom_serves_from: the smallest heap (the board's own figure) an ESP32 node with its code
  in ROM serves each model at, bisected to 1 KB; esp32_rom_model_need: that less the ESP32
  runtime's steady heap, what a workload of the model adds to a booted node (the manifests'
  mcu_rom_heap_bytes are measured in a bare interpreter instead: its qstr pools and baseline
  included, which a booted node already holds).
  components: each module imported alone, with what it imports; components_exclusive: the
  modules a booted node holds (node.py's and the MicroPython HAL's imports at module level,
  and the asyncio parts a link loads), imported leaves first, each figure what that module alone
  adds from ROM, with the qstr pool grown beforehand; runtime_qstrs: the names they intern
  (11 bytes each in the pool on this 64-bit port, which grows by doubling).
"""
import ast
import json
import os
import subprocess
import sys
import tempfile

from edgefleet import models
from edgefleet.boards import catalog
from edgefleet.controller.broker import MosquittoBroker
from edgefleet.controller.extras import micropython_binary, micropython_build
from edgefleet.controller.fleet import placement
from edgefleet.controller.install import image, romdeploy, romfs
from edgefleet.controller.sim.nodeprobe import NodeProbe

STEP = 4096
RESULTS_NEEDED = 5
# Info commands sent back to back while the runtime's peak is watched.
COMMAND_BURST = 20
# Run under MicroPython: imports one module and prints the heap it holds (heap_import_probe.py).
IMPORT_PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "heap_import_probe.py")


def serves(broker, heap, model, attempt, board="rpi-pico-w", store="files"):
    """Whether a node of `board` with its code in `store` serves `model` at `heap` bytes (-X
    heapsize: with ROM code, the simulated partition's window comes on top, as always)."""
    workload = [{"id": "w", "model": model, "rate": 20, "input": {"kind": "samples"}}]
    with tempfile.TemporaryDirectory() as root:
        probe = NodeProbe(broker, root, "heap-%d-%d" % (heap, attempt), board, heap_override=heap, code_store=store)
        with probe.start(workload):
            ok = probe.wait_for(lambda p: len(p.of_kind("result")) >= RESULTS_NEEDED, 20)
            boot = probe.boot_event()
            return bool(ok), boot["data"]["heap_used"] if boot else None


def smallest_heap(broker, model, low, high, board="rpi-pico-w", store="files", step=STEP):
    """Bisect between a heap known to fail (low) and one known to work (high)."""
    attempt = 0
    while high - low > step:
        mid = (low + high) // 2 // 1024 * 1024
        attempt += 1
        ok, _ = serves(broker, mid, model, attempt, board, store)
        print("%s on %s (%s) at %d bytes: %s" % (model, board, store, mid, "serves" if ok else "fails"), file=sys.stderr)
        if ok:
            high = mid
        else:
            low = mid
    return high


def runtime_heap(broker, board, store):
    """The node's heap in use after boot (boot event) at its profile's heap, no workload."""
    return runtime_figures(broker, board, store, commands=0)[0]


def runtime_figures(broker, board, store, commands=COMMAND_BURST):
    """(after boot, steady, peak) heap in use, no workload: the boot event's figure, the 5th
    heartbeat's, and the highest `mem_total - mem_low` over the heartbeats while `commands`
    info commands arrive back to back."""
    with tempfile.TemporaryDirectory() as root:
        probe = NodeProbe(broker, root, "rom-%s-%s" % (store, board.replace("rpi-", "")), board, code_store=store)
        with probe.start([]):
            if not commands:
                # From the console: a node out of heap (the ESP32 from files) never gets its link up.
                boot = probe.console_boot_heap(30)
                if boot is None:
                    raise SystemExit("%s from %s: no boot line" % (board, store))
                return boot["heap_used"], None, None
            boot = probe.wait_for(lambda p: p.boot_event(), 30)
            if boot is None:
                raise SystemExit("%s from %s: no boot event" % (board, store))
            hbs = probe.wait_for(lambda p: len(p.of_kind("hb")) >= 5 and p.of_kind("hb"), 30)
            if not hbs:
                raise SystemExit("%s from %s: no heartbeats" % (board, store))
            steady = hbs[4]["mem_total"] - hbs[4]["mem_free"]
            for _ in range(commands):
                probe.command("info", timeout=10)
            seen = len(probe.of_kind("hb"))
            probe.wait_for(lambda p: len(p.of_kind("hb")) >= seen + 2, 20)
            peak = max(h["mem_total"] - h["mem_low"] for h in probe.of_kind("hb") if "mem_low" in h)
            return boot["data"]["heap_used"], steady, peak


def rom_layer_bytes(broker, profile):
    """The heap the simulation layer takes on a board of `profile` whose code runs from ROM: a
    board set up as the simulated fleets do it gets the profile's heap, that layer and its ROM
    partition's window."""
    with tempfile.TemporaryDirectory() as root:
        probe = NodeProbe(broker, root, "layer", profile["name"], code_store="romfs")
        board = probe.fleet.add("layer", profile["name"])
        rom = profile["rom"]["segments"] * profile["rom"]["segment_bytes"]
        return board.heap_bytes - profile["heap_bytes"] - rom


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
    script = IMPORT_PROBE
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


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What the runtime imports at boot, and what asyncio loads once a link opens (its lazy parts).
RUNTIME_ROOTS = ("firmware.node", "boards.hal_micropython")
ASYNCIO_AT_CONNECT = ("asyncio.event", "asyncio.lock", "asyncio.funcs", "asyncio.stream")


def _module_imports(name):
    """The firmware and boards modules `name` imports at module level (not inside functions)."""
    base = os.path.join(REPO, *name.split("."))
    path = os.path.join(base, "__init__.py") if os.path.isdir(base) else base + ".py"
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    with open(path) as f:
        tree = ast.parse(f.read())
    found = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = parent + ("." + node.module if node.module else "")
            else:
                target = node.module
            found.append(target)
            # "from . import x": x may be a module of the package
            found += [target + "." + a.name for a in node.names
                      if os.path.exists(os.path.join(REPO, *(target + "." + a.name).split(".")) + ".py")]
    return [m for m in found if m.split(".")[0] in ("firmware", "boards") and m not in ("firmware", "boards")]


def runtime_boot_order():
    """The modules a booted node holds, each after what it imports."""
    order = ["asyncio"]

    def visit(name):
        if name in order:
            return
        for dep in _module_imports(name):
            visit(dep)
        order.append(name)
    for root in RUNTIME_ROOTS:
        visit(root)
    return order + list(ASYNCIO_AT_CONNECT)


def exclusive_heap(slot_dir, rom_path):
    """({module: bytes it alone adds, from ROM}, names the runtime's modules intern)."""
    names = os.path.join(os.path.dirname(rom_path), "boot-order.txt")
    with open(names, "w") as f:
        f.write("\n".join(runtime_boot_order()) + "\n")
    out = subprocess.run([micropython_binary(), "-X", "heapsize=1048576", IMPORT_PROBE, "--exclusive", names, rom_path],
                         cwd=slot_dir, capture_output=True, text=True, timeout=60)
    table, pools = {}, []
    for line in out.stdout.splitlines():
        if line.startswith("qstr pool:"):
            pools.append(int(line.split("n_qstr=")[1].split(",")[0]))
        elif line.strip():
            name, size = line.split()
            table[name] = int(size)
    if out.returncode != 0 or len(pools) != 3:
        raise SystemExit("exclusive heap probe failed: %s" % (out.stdout + out.stderr)[-500:])
    return table, pools[2] - pools[1] + pools[0]


def interpreter():
    """The MicroPython the simulated boards ran: its version, word size and native-code arch."""
    program = micropython_binary()
    out = subprocess.run([program, "-c", "import sys; print('%d.%d.%d' % sys.implementation.version[:3])"],
                         capture_output=True, text=True, timeout=30)
    arch, bits = micropython_build(program)
    return {"version": out.stdout.strip(), "word_bits": bits, "mpy_arch": arch}


def placeable(board, store, word):
    profile = catalog.load(board)
    node = {"id": "n", "board": board, "runtime": "micropython", "state": "online",
            "caps": {"heap": profile["heap_bytes"], "models": models.names(), "code": store, "word": word}}
    return [m for m in models.names()
            if placement.fits({"id": "w", "model": m}, node, profile, models.manifest(m)) is None]


def main():
    profiles = [p for p in catalog.all_profiles() if p["runtime"] == "micropython"]
    broker = MosquittoBroker().start()
    try:
        word = micropython_build(micropython_binary())[1]
        report = {"profiles": {}, "min_heap": {}}
        for profile in profiles:
            board = profile["name"]
            store = profile.get("code_store", "files")
            boot, steady, peak = runtime_figures(broker, board, store)
            budget = placement.runtime_budget(profile, store == "romfs", word)
            entry = {"heap_bytes": profile["heap_bytes"], "code_store": store, "runtime_heap_bytes": boot,
                     "runtime_heap_steady_bytes": steady, "runtime_heap_peak_bytes": peak,
                     "runtime_heap_budget_bytes": budget, "free_for_models_bytes": profile["heap_bytes"] - budget,
                     "models_placeable": placeable(board, store, word),
                     "files_runtime_heap_bytes": boot if store == "files" else runtime_heap(broker, board, "files")}
            print("%s: %s" % (board, entry), file=sys.stderr)
            report["profiles"][board] = entry
        # The smallest heap a node serves each model in, code as files (the Pico W's profile).
        ok, _ = serves(broker, max(p["heap_bytes"] for p in profiles), "digits_dense", 0)
        if not ok:
            raise SystemExit("the node does not serve even at %d bytes" % max(p["heap_bytes"] for p in profiles))
        for model in ("digits_dense", "digits_conv"):
            report["min_heap"][model] = smallest_heap(broker, model, 32 * 1024, max(p["heap_bytes"] for p in profiles))
        # The ESP32 with its code in ROM: the heap its node serves each model from (the board's
        # figure: the simulation layer's share is added to what is tried), and so what a workload
        # adds on top of the booted runtime (its steady heap, measured above).
        esp32 = catalog.load("esp32")
        layer = rom_layer_bytes(broker, esp32)
        steady = report["profiles"]["esp32"]["runtime_heap_steady_bytes"]
        report["esp32_rom_serves_from"], report["esp32_rom_model_need"] = {}, {}
        for model in ("digits_dense", "digits_conv"):
            low, high = 32 * 1024, esp32["heap_bytes"] + 48 * 1024
            if not serves(broker, high + layer, model, 0, "esp32", "romfs")[0]:
                raise SystemExit("the ESP32 in ROM does not serve %s even at %d bytes" % (model, high))
            least = smallest_heap(broker, model, low + layer, high + layer, "esp32", "romfs", step=1024) - layer
            report["esp32_rom_serves_from"][model] = least
            report["esp32_rom_model_need"][model] = least - steady
        esp32_rom = runtime_heap(broker, "esp32", "romfs")
    finally:
        broker.stop()
    with tempfile.TemporaryDirectory() as root:
        image.write_slot_set(root, catalog.load("esp32"), simulated=True)
        slot_dir = os.path.join(root, image.FIRST_SLOT)
        data = romdeploy.slot_image(slot_dir, catalog.load("esp32")["rom"]["segment_bytes"])
        rom_path = os.path.join(root, "slot.rom")
        with open(rom_path, "wb") as f:
            f.write(data)
        files, rom, unimportable = component_heap(slot_dir, rom_path)
        exclusive, qstrs = exclusive_heap(slot_dir, rom_path)
    report.update({"interpreter": interpreter(), "components": rom, "components_files": files, "components_unimportable": unimportable,
                   "components_exclusive": exclusive, "runtime_qstrs": qstrs,
                   "romfs_image_bytes": len(data),
                   "files_heap_bytes": report["profiles"]["esp32"]["files_runtime_heap_bytes"],
                   "romfs_heap_bytes": esp32_rom})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
