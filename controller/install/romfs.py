"""ROMFS images: the read-only filesystem MicroPython (>= 1.25) mounts with `vfs.VfsRom` and
imports `.mpy` modules from in place, so their bytecode is not copied into the heap (issue 17,
docs/ota.md "Code in ROM").

The format, as `vfs.VfsRom` reads it: every number is an unsigned varint (7 bits a byte, most
significant group first, the top bit set on all bytes but the last); a record is
`kind, length, payload`. The image is the header 0xd2 0xcd 0x31 ("RM1" with the top bits of the
first two set), the length of the root's records, then those records:
  DIRECTORY (4): name length, name, then the directory's records
  FILE      (5): name length, name, then one DATA_VERBATIM (2) record holding the bytes
  PADDING   (1): skipped by the reader
pack() writes these; unpack() reads them back (tests, `inspection`).
"""
import os

from ..errors import ConfigError

HEADER = b"\xd2\xcd\x31"
KIND_PADDING = 1
KIND_DATA_VERBATIM = 2
KIND_DIRECTORY = 4
KIND_FILE = 5
# The unix port's GC block on a 64-bit host (4 machine words). The simulated board reads the
# image into a bytearray on its heap; an image that is a whole number of blocks costs the heap
# exactly its size there, so the harness can add exactly that and the node subtract it.
IMAGE_ALIGN = 32
# What a board's ROM image holds of a slot: its code packages and its models.
ROM_DIRS = ("firmware", "boards", "models")


def encode_uint(value):
    if value < 0:
        raise ValueError("ROMFS numbers are unsigned, got %d" % value)
    out = bytearray([value & 0x7F])
    value >>= 7
    while value:
        out.insert(0, 0x80 | (value & 0x7F))
        value >>= 7
    return bytes(out)


def decode_uint(data, pos):
    """(value, position after it) of the varint at data[pos]."""
    value = 0
    while True:
        if pos >= len(data):
            raise ConfigError("ROMFS image ends inside a number at byte %d" % pos)
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, pos


def _record(kind, payload):
    return encode_uint(kind) + encode_uint(len(payload)) + payload


def _name(name):
    raw = name.encode("ascii")
    return encode_uint(len(raw)) + raw


def _tree(files):
    """{path: bytes} -> nested {name: bytes | dict}; rejects a path that is both file and folder."""
    root = {}
    for path, data in files.items():
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise ConfigError("ROMFS path %r names no file" % path)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError("ROMFS path %r runs through a file" % path)
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError("ROMFS path %r is a folder too" % path)
        node[parts[-1]] = bytes(data)
    return root


def _records(tree):
    out = bytearray()
    for name in sorted(tree):   # sorted: the same files always make the same image
        entry = tree[name]
        if isinstance(entry, dict):
            out += _record(KIND_DIRECTORY, _name(name) + _records(entry))
        else:
            out += _record(KIND_FILE, _name(name) + _record(KIND_DATA_VERBATIM, entry))
    return bytes(out)


def pack(files, align=IMAGE_ALIGN):
    """An image holding {path in the image: bytes}, padded (a PADDING record at the end of the
    root) to a multiple of `align` bytes."""
    body = _records(_tree(files))
    candidates = [b""] + [_record(KIND_PADDING, bytes(n)) for n in range(align + 8)]
    for pad in candidates:
        rest = body + pad
        image = HEADER + encode_uint(len(rest)) + rest
        if len(image) % align == 0:
            return image
    raise ConfigError("no padding aligns a ROMFS image to %d bytes" % align)


def unpack(image):
    """{path: bytes} of every file in an image; ConfigError if it is not a ROMFS image."""
    image = bytes(image)
    if image[:3] != HEADER:
        raise ConfigError("not a ROMFS image (header %r)" % image[:3])
    length, pos = decode_uint(image, 3)
    if pos + length > len(image):
        raise ConfigError("ROMFS image says %d bytes follow its header, it has %d" % (length, len(image) - pos))
    files = {}
    _read_records(image, pos, pos + length, "", files)
    return files


def _read_records(image, pos, end, prefix, files):
    while pos < end:
        kind, pos = decode_uint(image, pos)
        length, pos = decode_uint(image, pos)
        payload_end = pos + length
        if payload_end > end:
            raise ConfigError("ROMFS record at byte %d runs past its folder" % pos)
        if kind in (KIND_DIRECTORY, KIND_FILE):
            name_len, name_at = decode_uint(image, pos)
            name = image[name_at:name_at + name_len].decode("ascii")
            inner = name_at + name_len
            if kind == KIND_DIRECTORY:
                _read_records(image, inner, payload_end, prefix + name + "/", files)
            else:
                files[prefix + name] = _file_data(image, inner, payload_end, prefix + name)
        pos = payload_end


def _file_data(image, pos, end, path):
    while pos < end:
        kind, pos = decode_uint(image, pos)
        length, pos = decode_uint(image, pos)
        if kind == KIND_DATA_VERBATIM:
            return image[pos:pos + length]
        pos += length
    raise ConfigError("ROMFS file %s has no data record" % path)


def tree_files(root, dirs=ROM_DIRS):
    """{path relative to root: bytes} of every file under root's `dirs` (a slot's code and
    models, as image.write_slot() wrote them: .mpy for the board's arch)."""
    files = {}
    for top in dirs:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                with open(full, "rb") as f:
                    files[os.path.relpath(full, root).replace(os.sep, "/")] = f.read()
    return files


def pack_slot(slot_dir):
    """The ROM image of one A/B slot: its code and models."""
    files = tree_files(slot_dir)
    if not any(p.startswith("firmware/") for p in files):
        raise ConfigError("slot %s holds no firmware to put in ROM" % slot_dir)
    return pack(files)
