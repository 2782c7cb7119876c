# Run by tools/bench/mcu_heap.py under the MicroPython unix port, in a slot folder.
#   micropython heap_import_probe.py MODULE [ROM_IMAGE]
#     imports one firmware module and prints the heap it holds after a collection;
#   micropython heap_import_probe.py --exclusive NAMES_FILE [ROM_IMAGE]
#     (one module name a line: this unix port dies on an argument over 255 characters)
#     imports the modules in that order (each one's imports first: a post-order of the import
#     graph) and prints "MODULE BYTES" for each, what it alone adds. The qstr pool is grown
#     first past what the modules intern: a pool is allocated when a name overflows the last
#     one (each twice the size of the one before, 7 KB at the 621st name on this 64-bit port;
#     1300 names fill the pools up to one of 1280 free entries),
#     and a module's figure would otherwise hold a pool that all of them fill. Three qstr_info()
#     lines (before and after growing the pool, at the end) give the names the modules intern.
# With ROM_IMAGE the slot's code runs in place from that ROMFS image (the image's own bytes are
# read before the measurement starts, so they are not in the figure). The module's packages are
# imported first, so each module's figure leaves out the __init__s it shares with its siblings
# (firmware.engine's figure holds what the package itself imports).
import gc
import sys

sys.path.insert(0, ".")
exclusive = sys.argv[1] == "--exclusive"
args = sys.argv[2:] if exclusive else sys.argv[1:]
if len(args) > 1:
    import vfs
    with open(args[1], "rb") as f:
        rom = f.read()
    vfs.mount(vfs.VfsRom(rom), "/rom")
    sys.path.insert(0, "/rom")
import firmware  # noqa: E402,F401
import boards  # noqa: E402,F401


if exclusive:
    import micropython
    micropython.qstr_info()   # "qstr pool: n_pool=.., n_qstr=N, ...": before, after the filler, at the end

    class _Names:
        pass
    grow = _Names()
    for i in range(1300):
        setattr(grow, "pool_filler_" + str(i), None)   # interns the name: the pool grows
    grow = None
    micropython.qstr_info()
    with open(args[0]) as f:
        names = f.read().split()
    for name in names:
        package = name.rpartition(".")[0]
        if package:
            __import__(package)
        gc.collect()
        start = gc.mem_alloc()
        __import__(name)
        gc.collect()
        print(name, gc.mem_alloc() - start)
    micropython.qstr_info()
else:
    package = args[0].rpartition(".")[0]
    if package:
        __import__(package)
    gc.collect()
    before = gc.mem_alloc()
    __import__(args[0])
    gc.collect()
    print(gc.mem_alloc() - before)
