# Code in ROM (issue 17, docs/ota.md "Code in ROM"): mounts the ROMFS image of the slot that
# boots at /rom and puts it first on sys.path, so the slot's .mpy modules run in place instead
# of being copied into the heap. Kept at the flash root beside slots.mpy, outside the slots,
# and only on a board whose code store is "romfs": main.py imports it before the slot's code.
#
# Where the image is, first found wins:
# 1. the board's ROM partition (vfs.rom_ioctl): slot_a in segment 0, slot_b in segment 1, used
#    only when the slot holds the file ROM_MARK, which `edgefleet flash` writes after it verified
#    the segment and before the pointer names the slot: a segment cut off midway, or one left
#    from older code, is never mounted under a slot it does not belong to. A real board maps the
#    segment from flash; the simulated one (controller/sim/mcu_rom) hands a copy on its heap,
#    which the harness adds to the heap and the node leaves out of its figures.
# 2. the file S + ".rom" at the flash root (simulated fleets, controller/sim/simfleet.py): read
#    into a bytearray on the heap, likewise accounted for.
# 3. neither: the slot's .mpy files.
import os
import sys

MOUNT_POINT = "/rom"
SUFFIX = ".rom"
ROM_MARK = "ROM"
SLOT_NAMES = ("slot_a", "slot_b")


def image_path(slot):
    return slot + SUFFIX


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _rom_ioctl(vfs):
    # vfs.rom_ioctl, else a simulated board's (controller/sim/mcu_rom, on its module path).
    ioctl = getattr(vfs, "rom_ioctl", None)
    if ioctl is None:
        try:
            import ef_romsim
            ioctl = ef_romsim.rom_ioctl
        except ImportError:
            pass
    return ioctl


def _segment(vfs, slot):
    # (the slot's verified segment as a buffer, its name), or None.
    ioctl = _rom_ioctl(vfs)
    if ioctl is None or slot not in SLOT_NAMES or not _exists(slot + "/" + ROM_MARK):
        return None
    index = SLOT_NAMES.index(slot)
    if ioctl(1) <= index:
        return None
    seg = ioctl(2, index)
    if isinstance(seg, int) or bytes(seg[:3]) != b"\xd2\xcd\x31":
        print("romboot: ROM segment %d holds no image, %s runs from files" % (index, slot))
        return None
    return seg, "ROM segment %d" % index


def mount(slot):
    """Mount slot's image at /rom and put it first on sys.path; False if it has none. Never
    raises ImportError: main.py takes that for "no romboot here", a board with its code as files."""
    sys.modules.pop(__name__, None)   # needed only now: main.py drops its name for it too
    try:
        import vfs
        vfs.VfsRom
    except (ImportError, AttributeError):
        raise OSError("this MicroPython cannot mount ROMFS images (no vfs.VfsRom)")
    found = _segment(vfs, slot)
    if found is not None:
        buf, name = found
    else:
        path = name = image_path(slot)
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
    print("romboot: %s (%d bytes) mounted at %s" % (name, len(buf), MOUNT_POINT))
    return True
