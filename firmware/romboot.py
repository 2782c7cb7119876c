# Code in ROM (issue 17, docs/ota.md "Code in ROM"): mounts the ROMFS image of the slot that
# boots at /rom and puts it first on sys.path, so the slot's .mpy modules run in place instead
# of being copied into the heap. Kept at the flash root beside slots.mpy, outside the slots,
# and only on a board whose code store is "romfs": main.py imports it before the slot's code.
#
# The image of slot S is the file S + ".rom" at the flash root, standing for the ROM segment
# that holds S. This runs on the simulated board (the unix port, no vfs.rom_ioctl), which reads
# it into a bytearray on its heap: the harness gives the board exactly that many more bytes and
# the node reports its heap without them (controller/sim/simfleet.py).
import os
import sys

MOUNT_POINT = "/rom"
SUFFIX = ".rom"


def image_path(slot):
    return slot + SUFFIX


def mount(slot):
    """Mount slot's image at /rom and put it first on sys.path; False if it has none. Never
    raises ImportError: main.py takes that for "no romboot here", a board with its code as files."""
    sys.modules.pop(__name__, None)   # needed only now: main.py drops its name for it too
    try:
        import vfs
        vfs.VfsRom
    except (ImportError, AttributeError):
        raise OSError("this MicroPython cannot mount ROMFS images (no vfs.VfsRom)")
    path = image_path(slot)
    try:
        size = os.stat(path)[6]
    except OSError:
        # A slot an update wrote as files (OTA does not write ROM images yet) boots from them.
        print("romboot: no %s, %s runs from files" % (path, slot))
        return False
    # One allocation of exactly the image's size, filled in place: reading it as bytes would
    # briefly need it twice.
    buf = bytearray(size)
    with open(path, "rb") as f:
        f.readinto(buf)
    vfs.mount(vfs.VfsRom(buf), MOUNT_POINT)
    sys.path.insert(0, MOUNT_POINT)
    print("romboot: %s (%d bytes) mounted at %s" % (path, size, MOUNT_POINT))
    return True
