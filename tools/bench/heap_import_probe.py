# Run by tools/bench/mcu_heap.py under the MicroPython unix port, in a slot folder: imports one
# firmware module and prints the heap it holds after a collection.
#   micropython heap_import_probe.py MODULE [ROM_IMAGE]
# With ROM_IMAGE the slot's code runs in place from that ROMFS image (the image's own bytes are
# read before the measurement starts, so they are not in the figure). The module's packages are
# imported first, so each module's figure leaves out the __init__s it shares with its siblings
# (firmware.engine's figure holds what the package itself imports).
import gc
import sys

sys.path.insert(0, ".")
if len(sys.argv) > 2:
    import vfs
    with open(sys.argv[2], "rb") as f:
        rom = f.read()
    vfs.mount(vfs.VfsRom(rom), "/rom")
    sys.path.insert(0, "/rom")
import firmware  # noqa: E402,F401
import boards  # noqa: E402,F401
package = sys.argv[1].rpartition(".")[0]
if package:
    __import__(package)
gc.collect()
before = gc.mem_alloc()
__import__(sys.argv[1])
gc.collect()
print(gc.mem_alloc() - before)
