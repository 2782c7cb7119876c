# An update into ROM (docs/ota.md "Code in ROM"): a bundle built for a board whose code runs in
# place carries that code as one ROMFS image, ROM_IMAGE, unpacked into the inactive slot like
# every other file and hash-checked there. This copies it into the slot's ROM segment (slot_a =
# segment 0, slot_b = 1) through vfs.rom_ioctl, then writes the slot's ROM mark. Only after that
# does the pointer name the slot, so a power cut anywhere in here leaves the board booting the
# slot it ran, and a half-written segment sits under a slot without a mark, never mounted.
# Imported only by the OTA receiver, for a ROM bundle.
import hashlib
import os

from .slots import SLOTS
from .update_errors import BundleError

ROM_IMAGE = "rom.img"
# firmware/romboot.py's ROM_MARK: the mark holds "SHA256 SIZE" of the image. Segment i holds
# slots.SLOTS[i].
ROM_MARK = "ROM"
CHUNK = 1024


def rom_ioctl():
    """vfs.rom_ioctl, else a simulated board's (controller/sim/mcu_rom, on its module path), else None."""
    try:
        import vfs
        return vfs.rom_ioctl
    except (ImportError, AttributeError):
        pass
    try:
        import ef_romsim
        return ef_romsim.rom_ioctl
    except ImportError:
        return None


def _segment_index(slot):
    if slot not in SLOTS:
        raise BundleError("slot %r has no ROM segment" % slot)
    return SLOTS.index(slot)


def check(slot):
    """Raise BundleError unless this board can take a ROM bundle into `slot`'s segment: run
    before anything on flash changes."""
    ioctl = rom_ioctl()
    if ioctl is None:
        raise BundleError("the bundle's code is a ROM image and this MicroPython has no vfs.rom_ioctl: "
                          "build the bundle with --code-store files for this board")
    count = ioctl(1)
    if count < len(SLOTS):
        raise BundleError("the bundle's code is a ROM image and this board has %d ROM segment(s), A/B "
                          "slots need %d: build the bundle with --code-store files for it" % (max(count, 0), len(SLOTS)))
    _segment_index(slot)


def install(slot_dir, slot, size, digest):
    """Copy slot_dir/ROM_IMAGE (size bytes, sha256 hex digest, as the verified manifest says) into
    the slot's segment and mark the slot. Blocks while it writes: about a second on a board for
    a 100 KB image, well inside the watchdog's timeout."""
    ioctl = rom_ioctl()
    if ioctl is None:
        raise BundleError("this MicroPython has no vfs.rom_ioctl")
    index = _segment_index(slot)
    # The segment's size comes from op 2 on a board; erasing whole blocks over the image is
    # enough, and a simulated board must not remap a segment while another one runs the node.
    unit = ioctl(3, index, 0, size)
    if unit < 0:
        raise BundleError("ROM segment %d refused the erase of %d bytes (errno %d): the image does not fit it"
                          % (index, size, -unit))
    buf = bytearray(CHUNK - CHUNK % unit if unit <= CHUNK else unit)
    h = hashlib.sha256()
    offset = 0
    with open(slot_dir + "/" + ROM_IMAGE, "rb") as f:
        while offset < size:
            n = f.readinto(buf)
            if not n:
                raise BundleError("%s ended at byte %d of %d" % (ROM_IMAGE, offset, size))
            h.update(memoryview(buf)[:n])
            length = n
            if n % unit:
                length = n + unit - n % unit
                for i in range(n, length):
                    buf[i] = 0xff   # erased flash: the tail of the last write unit stays blank
            r = ioctl(4, index, offset, memoryview(buf)[:length])
            if r < 0:
                raise BundleError("ROM segment %d refused a write at byte %d (errno %d)" % (index, offset, -r))
            offset += n
    ioctl(5, index)
    import binascii
    if binascii.hexlify(h.digest()).decode() != digest:
        raise BundleError("%s changed on flash while it was copied into ROM" % ROM_IMAGE)
    # What boots is checked against the mark at every mount (firmware/romboot.py).
    tmp = slot_dir + "/" + ROM_MARK + ".tmp"
    with open(tmp, "w") as f:
        f.write("%s %d\n" % (digest, size))
    os.rename(tmp, slot_dir + "/" + ROM_MARK)
