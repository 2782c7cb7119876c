# The ROM partition of a simulated MCU board: the hardware a real board's `vfs.rom_ioctl`
# drives (rp2, esp32, stm32 ports), here over a file beside the board's flash folder, so that
# the flasher, romboot and `mpremote romfs` talk to it exactly as to a real board. Runs in the
# MicroPython unix port (which has vfs.VfsRom but no vfs.rom_ioctl): attach() puts a `vfs`
# module with rom_ioctl into sys.modules, which `import vfs` then finds before the builtin.
#
# The partition (EDGEFLEET_SIM_ROM="PATH:SEGMENTS:SEGMENT_BYTES"): SEGMENTS segments of
# SEGMENT_BYTES back to back in PATH. As NOR flash: erase sets whole ERASE_BLOCK blocks to 0xff;
# a write, at an offset and of a length that are multiples of WRITE_ALIGN, can only clear bits
# (new = old AND data) until the block is erased again.
# rom_ioctl(op, ...), as MicroPython's extmod/vfs_rom_ioctl defines it:
#   1            -> number of segments
#   2, id        -> the segment's bytes (a memoryview; a board maps flash, this one holds a copy)
#   3, id, [offset,] length -> erase the blocks over [offset, offset+length); -> min write size
#   4, id, offset, data     -> program data at offset
#   5, id        -> writing done
#   6, id        -> erase block size
# A bad request answers a negative errno, as the real one does.
import os
import sys

ERASE_BLOCK = 4096
WRITE_ALIGN = 256
EINVAL = 22
ENODEV = 19
# A write is programmed one write unit at a time through this buffer: a real board's rom_ioctl
# takes no heap to write, and this one must not take more than a unit (an update writes while
# the node's heap is at its fullest).
_UNIT = bytearray(WRITE_ALIGN)

# The "mapped" partition: one bytearray holding every segment, read from the file at the first
# op 2 of a power cycle and kept in step with writes. A real board maps its segments for free;
# this one pays heap for them (the harness adds the partition's size to the heap, the node
# leaves it out of its figures). All segments stay mapped at their own place, as on a board:
# code run from one has its names interned in place, pointing into it, while the flasher or an
# update reads and writes another.
# The window must outlive this module: `edgefleet flash` clears sys.modules and the REPL's
# globals to free a node's heap (install/flash_release.py), and the heap the node fragmented
# has no room for a second window. So it rides in sys.argv, a list the interpreter keeps for
# good and nothing on a board reads, as [WINDOW_TAG, bytearray].
WINDOW_TAG = "ef_romsim.window"


def _window(path, total):
    buf = _mapped()
    if buf is not None:
        return buf
    buf = bytearray(total)
    with open(path, "rb") as f:
        f.readinto(buf)
    sys.argv.append([WINDOW_TAG, buf])
    return buf


def _mapped():
    # The window, if op 2 mapped it in this power cycle, else None.
    for item in sys.argv:
        if isinstance(item, list) and item and item[0] == WINDOW_TAG:
            return item[1]
    return None


def _config():
    spec = os.getenv("EDGEFLEET_SIM_ROM")
    if not spec:
        return None, 0, 0
    path, count, size = spec.rsplit(":", 2)
    return path, int(count), int(size)


def rom_ioctl(op, *args):
    path, count, size = _config()
    if op == 1:
        return count
    if not args or not 0 <= args[0] < count:
        return -ENODEV
    seg = args[0]
    base = seg * size
    if op == 2:
        return memoryview(_window(path, count * size))[base:base + size]
    if op == 3:
        offset, length = (0, args[1]) if len(args) == 2 else (args[1], args[2])
        if offset % ERASE_BLOCK or length < 0 or offset + length > size:
            return -EINVAL
        end = min(size, (offset + length + ERASE_BLOCK - 1) // ERASE_BLOCK * ERASE_BLOCK)
        # In write-unit pieces: this simulated hardware runs on the board's own heap.
        blank = b"\xff" * WRITE_ALIGN
        with open(path, "r+b") as f:
            f.seek(base + offset)
            for at in range(offset, end, WRITE_ALIGN):
                f.write(blank)
        buf = _mapped()
        if buf is not None:
            for at in range(base + offset, base + end):
                buf[at] = 0xff
        return WRITE_ALIGN
    if op == 4:
        offset, data = args[1], args[2]
        if offset % WRITE_ALIGN or len(data) % WRITE_ALIGN or offset + len(data) > size:
            return -EINVAL
        unit = _UNIT
        buf = _mapped()
        with open(path, "r+b") as f:
            for at in range(0, len(data), WRITE_ALIGN):
                f.seek(base + offset + at)
                f.readinto(unit)
                for i in range(WRITE_ALIGN):
                    unit[i] &= data[at + i]   # flash programming only clears bits
                f.seek(base + offset + at)
                f.write(unit)
                if buf is not None:
                    buf[base + offset + at:base + offset + at + WRITE_ALIGN] = unit
        return 0
    if op == 5:
        return 0
    if op == 6:
        return ERASE_BLOCK
    return -EINVAL


class _Vfs:
    pass


def attach():
    """Make `import vfs` answer the builtin vfs plus rom_ioctl (the unix port's builtin module
    takes no new attributes)."""
    import vfs
    if getattr(vfs, "rom_ioctl", None) is rom_ioctl:
        return
    shim = _Vfs()
    for name in dir(vfs):
        if not name.startswith("__"):
            setattr(shim, name, getattr(vfs, name))
    shim.rom_ioctl = rom_ioctl
    sys.modules["vfs"] = shim
