"""`edgefleet flash` for a board whose code store is "romfs" (docs/ota.md "Code in ROM"): the
slot's ROM image goes into the board's ROM partition over the raw REPL, through the board's
vfs.rom_ioctl (flash_agent.py's ef_rom_* functions), segment index = slot index.

Order, so that a deploy cut off at any point leaves a bootable board: the segment of the slot
being written is never the one the pointer names (flasher._target_slot), it is erased, written
in chunks (each read back from the segment and checked against its sha256 on the board), then
the whole segment's sha256 is checked; only then does the sync write the slot's MANIFEST and
ROM mark (romboot mounts a segment only under a slot holding its mark) and the pointer.
"""
import hashlib
import os

from edgefleet.firmware import slots

from . import image
from ..errors import FlashError
from .serialrepl import LinkLost, NoAnswer, ReplExecError

# firmware/romboot.py's ROM_MARK: the file in a slot saying its code is in the slot's segment.
ROM_MARK = "ROM"
# What goes into ROM: the slot's code, and each model's .tflite, which the engine then reads in
# place (a ROMFS file is a zero-copy memoryview of the mapped flash: no byte of the model is
# copied into the heap). The models also stay files in the slot (their samples, labels and
# manifest only there): a board that cannot mount its segment still runs them from files.
CODE_DIRS = ("firmware", "boards")
ROM_MODEL_FILES = ("model.tflite",)
CHUNK_BYTES = 4096
ERASED = b"\xff"


class RomPartition:
    """What the board answered to a ROM query: its erase block and each segment's size."""

    def __init__(self, erase_block, sizes):
        self.erase_block = erase_block
        self.sizes = sizes

    def segment_bytes(self, slot):
        return self.sizes[segment_of(slot)]


def segment_of(slot):
    return slots.SLOTS.index(slot)


def query(agent):
    """(RomPartition, None), or (None, why the board has none)."""
    try:
        answer = agent.link.exec("ef_rom_query()").decode("utf-8", "replace").strip().splitlines()
    except ReplExecError as exc:
        last = (exc.stderr.strip().splitlines() or ["(the board printed no error)"])[-1]
        raise FlashError("the board on %s failed a ROM query: %s" % (agent.link.port, last), agent.link.port) from exc
    words = answer[-1].split() if answer else []
    if words[:1] == ["none"]:
        return None, " ".join(words[1:])
    try:
        if words[0] != "rom":
            raise ValueError(words)
        return RomPartition(int(words[1]), [int(w) for w in words[2:]]), None
    except (ValueError, IndexError):
        raise FlashError("unexpected answer from the board on %s to a ROM query: %r"
                         % (agent.link.port, answer[-200:]), agent.link.port)


def misfit(partition, image_bytes):
    """Why the image cannot go into the partition's slot segments, or None when it can."""
    if len(partition.sizes) < len(slots.SLOTS):
        return "its ROM partition has %d segment(s), A/B slots need %d" % (len(partition.sizes), len(slots.SLOTS))
    small = min(partition.sizes[:len(slots.SLOTS)])
    if small < image_bytes:
        return "the ROM image (%d bytes) is larger than a ROM segment (%d bytes)" % (image_bytes, small)
    return None


def slot_image(slot_dir, room=None):
    """The ROM image of a slot: its code (CODE_DIRS), then its models' ROM_MODEL_FILES as far as
    `room` (a segment's bytes; None: all of them) allows, so that a slot's models switch with its
    code (one segment per slot). The code always goes in; a model left out is read from its
    file, as on a board without ROM (it then costs the heap its weights)."""
    from . import romfs
    files = romfs.tree_files(slot_dir, CODE_DIRS)
    if not any(p.startswith("firmware/") for p in files):
        raise FlashError("slot %s holds no firmware to put in ROM" % slot_dir)
    packed = romfs.pack(files)
    # Smallest first: the most models read in place.
    for rel, data in sorted(romfs.tree_files(slot_dir, ("models",)).items(), key=lambda item: (len(item[1]), item[0])):
        if rel.rsplit("/", 1)[-1] in ROM_MODEL_FILES:
            with_model = dict(files, **{rel: data})
            trial = romfs.pack(with_model)
            if room is None or len(trial) <= room:
                files, packed = with_model, trial
    return packed


def prepare_tree(tree, slot, rom_image, mpy_arch):
    """Turn an image tree's slot into one whose code is in ROM: its code folders go (they are in
    the image), its ROM mark (the image's sha256 and size) comes, romboot beside the selector."""
    import shutil
    slot_dir = os.path.join(tree, slot)
    for top in CODE_DIRS:
        shutil.rmtree(os.path.join(slot_dir, top), ignore_errors=True)
    with open(os.path.join(slot_dir, ROM_MARK), "w") as f:
        f.write("%s %d\n" % (hashlib.sha256(rom_image).hexdigest(), len(rom_image)))
    src = os.path.join(image.FIRMWARE_DIR, "romboot.py")
    if mpy_arch:
        image.compile_mpy(src, os.path.join(tree, "romboot.mpy"), "romboot.py", mpy_arch)
    else:
        shutil.copyfile(src, os.path.join(tree, "romboot.py"))


def segment_digest(rom_image, segment_bytes):
    """sha256 of a segment holding rom_image, erased (all ones) after it."""
    h = hashlib.sha256(rom_image)
    h.update(ERASED * (segment_bytes - len(rom_image)))
    return h.hexdigest()


def deploy(agent, slot, rom_image, partition, progress):
    """Put rom_image into slot's segment unless it holds it already; returns the bytes written."""
    port = agent.link.port
    index = segment_of(slot)
    size = partition.sizes[index]
    label = "ROM segment %d (%s)" % (index, slot)
    expected = segment_digest(rom_image, size)
    try:
        if _exec(agent, "ef_rom_digest(%d,False)" % index) == expected:
            return 0
        align = int(_exec(agent, "ef_rom_erase(%d,%d)" % (index, size)))
        if align <= 0:
            raise FlashError("the board on %s answered %d to a ROM erase" % (port, align), port)
        chunk_bytes = (max(CHUNK_BYTES, align) + align - 1) // align * align   # whole write units
        padded = rom_image + ERASED * (-len(rom_image) % align)
        progress.start(1, len(padded))
        for offset in range(0, len(padded), chunk_bytes):
            chunk = padded[offset:offset + chunk_bytes]
            payload, wbits = chunk, 0
            if agent.deflate:
                from .flasher import WBITS, raw_deflate
                packed = raw_deflate(chunk)
                if len(packed) < len(chunk):
                    payload, wbits = packed, WBITS
            answer = _exec(agent, b"ef_rom_write(%d,%d,%s,%d,'%s')" % (
                index, offset, agent._data(payload), wbits, hashlib.sha256(chunk).hexdigest().encode()))
            if answer != "ok":
                raise FlashError("%s failed its check at byte %d on the board on %s (%s); the pointer still "
                                 "names the slot it booted: flash again" % (label, offset, port, answer[-200:]), port)
            progress.advance(label, len(chunk))
        got = _exec(agent, "ef_rom_digest(%d,True)" % index)
        if got != expected:
            raise FlashError("%s holds sha256 %s after the write, %s expected; the pointer still names the "
                             "slot it booted: flash again" % (label, got, expected), port)
        progress.file_done(label, len(padded))
        progress.finish()
        return len(padded)
    except (LinkLost, NoAnswer) as exc:
        raise FlashError("%s while writing %s; the board still boots the slot it booted before: flash again "
                         "to finish" % (exc, label), port, label) from exc
    except ReplExecError as exc:
        last = (exc.stderr.strip().splitlines() or ["(the board printed no error)"])[-1]
        raise FlashError("writing %s on the board on %s failed: %s" % (label, port, last), port, label) from exc


def _exec(agent, code):
    if isinstance(code, str):
        code = code.encode()
    return agent.link.exec(code).decode("utf-8", "replace").strip()
