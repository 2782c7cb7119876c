# Run by the simulation harness (controller/sim/simfleet.py) under the MicroPython unix port, in a
# simulated board's flash directory: prints how many bytes of heap the simulation layer
# (hal_sim.py and its power model, and on a board with a ROM partition the partition's driver,
# controller/sim/mcu_rom/ef_romsim.py) holds beyond the real board's HAL. A real board never
# loads that layer, so the harness gives the simulated board that much more heap and hal_sim
# reports the heap a real board would have.
# argv: [ROM image, the simulated partition's module folder] for a board whose code runs from ROM.
import gc
import sys

sys.path.insert(0, ".")
rom_sim = None
if len(sys.argv) > 1:
    # A board whose code runs from ROM (firmware/romboot.py): measure the layer as it loads there.
    import vfs
    with open(sys.argv[1], "rb") as f:
        rom = f.read()
    vfs.mount(vfs.VfsRom(rom), "/rom")
    sys.path.insert(0, "/rom")
    rom_sim = sys.argv[2]
import boards.hal_micropython  # noqa: E402  (the real board's HAL: not part of the allowance)

gc.collect()
before = gc.mem_alloc()
import boards.hal_sim  # noqa: E402,F401

if rom_sim:
    sys.path.append(rom_sim)
    import ef_romsim
    ef_romsim.attach()
gc.collect()
print(gc.mem_alloc() - before)
