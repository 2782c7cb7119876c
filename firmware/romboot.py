# Code in ROM (issue 17, docs/ota.md "Code in ROM"): mounts the ROM segment of the slot that
# boots at /rom and puts it first on sys.path, so the slot's .mpy modules run in place instead
# of being copied into the heap. Kept at the flash root beside slots.mpy, outside the slots,
# and only on a board whose code store is "romfs": main.py imports it before the slot's code.
#
# slot_a's image is in segment 0, slot_b's in segment 1 (vfs.rom_ioctl). A segment is mounted
# only under a slot holding the file ROM_MARK ("SHA256 SIZE" of the image), which `edgefleet
# flash` or an update (firmware/romslot.py) writes after the segment is written and before the
# pointer names the slot, and only when the segment still hashes to the mark: a segment cut off
# midway, left from older code or damaged since is never run. Without a usable segment the slot
# runs from its .mpy files; a slot whose code came only as a ROM image then fails to import,
# and the boot selector falls back to the other slot. A real board maps the segment from flash;
# a simulated one (controller/sim/mcu_rom) hands a copy on its heap, which the harness adds to
# the heap and the node leaves out of its figures.
import sys

MOUNT_POINT = "/rom"
ROM_MARK = "ROM"
SLOT_NAMES = ("slot_a", "slot_b")


def _mark(slot):
    # (sha256 hex, size) from the slot's mark, or None.
    try:
        with open(slot + "/" + ROM_MARK) as f:
            digest, size = f.read().split()
        return digest, int(size)
    except (OSError, ValueError):
        return None


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


def _digest(seg, size):
    import binascii
    import hashlib
    h = hashlib.sha256()
    for at in range(0, size, 4096):
        h.update(seg[at:min(size, at + 4096)])
    return binascii.hexlify(h.digest()).decode()


def _segment(vfs, slot):
    # The slot's segment as a buffer when it holds the image its mark names, else None.
    mark = _mark(slot) if slot in SLOT_NAMES else None
    ioctl = _rom_ioctl(vfs) if mark is not None else None
    if ioctl is None:
        return None
    index = SLOT_NAMES.index(slot)
    if ioctl(1) <= index:
        return None
    seg = ioctl(2, index)
    if isinstance(seg, int) or len(seg) < mark[1] or _digest(seg, mark[1]) != mark[0]:
        print("romboot: ROM segment %d does not hold %s's image, %s runs from files" % (index, slot, slot))
        return None
    return seg


def mount(slot):
    """Mount slot's segment at /rom and put it first on sys.path; False if it has none. Never
    raises ImportError: main.py takes that for "no romboot here", a board with its code as files."""
    sys.modules.pop(__name__, None)   # needed only now: main.py drops its name for it too
    try:
        import vfs
        vfs.VfsRom
    except (ImportError, AttributeError):
        raise OSError("this MicroPython cannot mount ROMFS images (no vfs.VfsRom)")
    seg = _segment(vfs, slot)
    if seg is None:
        return False
    vfs.mount(vfs.VfsRom(seg), MOUNT_POINT)
    sys.path.insert(0, MOUNT_POINT)
    print("romboot: ROM segment %d (%d bytes) mounted at %s" % (SLOT_NAMES.index(slot), len(seg), MOUNT_POINT))
    return True
