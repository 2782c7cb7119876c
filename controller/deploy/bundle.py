"""Update bundles (docs/ota.md): build, sign and inspect.

A bundle holds one board's slot - firmware, HAL modules (MicroPython code precompiled with
mpy-cross) and models - behind a manifest that lists every file with its size and sha256 and
carries a sequence number, signed with Ed25519 by the controller's signing key
(controller/install/keys.py), which never leaves this host; boards verify with its public half.
The sequence number (next_seq) rises with every bundle built here: a node refuses one that is
not above the last it took, so an older signed bundle cannot be installed again.

firmware/bundle.py is the one codec of the format: its constants (MAGIC, FORMAT, SIG_BYTES,
MAX_MANIFEST) and its parsing (header, manifest lines, paths) are what a board runs to verify
and unpack a bundle, and what inspect() here runs too. This module keeps only the writing side,
which a board never needs. Its errors are the firmware's (firmware/update_errors.py), raised
by either side alike; the CLI reports FirmwareError as it does EdgefleetError.
"""
import contextlib
import hashlib
import hmac
import io
import json
import os
import shutil
import struct
import tempfile
import time

from edgefleet.boards import catalog
from edgefleet.firmware import bundle as wire
from edgefleet.firmware import romslot

from edgefleet.firmware.update_errors import BadSignature, BundleError, CorruptBundle

from ..install import image, keys
from ..security.files import write_private

CHUNK = 65536
# Where a MicroPython board's code runs from (docs/ota.md "Code in ROM"); a ROM bundle's
# manifest header says "code": "romfs".
CODE_STORES = ("files", "romfs")
CODE_IN_ROM = "romfs"


def manifest_bytes(manifest):
    """The manifest as signed and as a slot keeps it: a JSON header line, then one
    "SIZE SHA256 PATH" line per file (firmware/bundle.py reads it a line at a time)."""
    header = {k: v for k, v in manifest.items() if k != "files"}
    header["files"] = len(manifest["files"])
    lines = [json.dumps(header, separators=(",", ":"), sort_keys=True)]
    for path, size, digest in manifest["files"]:
        if " " in path or "\n" in path:
            raise BundleError("file path %r cannot go in a manifest (no spaces or newlines)" % path)
        lines.append("%d %s %s" % (size, digest, path))
    return ("\n".join(lines) + "\n").encode()


def parse_manifest(raw):
    """The manifest dict (header keys plus 'files': [[path, size, sha256]]) from its bytes,
    read by the board's own codec (firmware/bundle.py); raises its CorruptBundle."""
    f = io.BytesIO(raw)
    header = wire.read_header(f)
    wire.check_format(header)
    count = header.pop("files")
    files = []
    for _ in range(count):
        line = f.readline()
        if not line:
            raise CorruptBundle("manifest lists %d files, its header says %d" % (len(files), count))
        path, size, digest = wire.parse_entry(line)
        files.append([path, size, digest])
    if f.read():
        raise CorruptBundle("manifest holds more than the %d files its header says" % count)
    header["files"] = files
    return header


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _mpy_version(slot_dir, rels):
    for rel in rels:
        if rel.endswith(".mpy"):
            with open(os.path.join(slot_dir, rel), "rb") as f:
                head = f.read(2)
            return head[1]
    return None


def manifest_for(slot_dir, rels, profile, version, mpy_arch=None, seq=0, mpy=None):
    """seq: the bundle's sequence number (next_seq()); 0 for a slot written by flashing.
    mpy: the .mpy version the files need, when none of them is a .mpy (a ROM bundle's code is
    inside its image)."""
    files = [[rel, os.path.getsize(os.path.join(slot_dir, rel)), _sha256_file(os.path.join(slot_dir, rel))]
             for rel in rels]
    manifest = {"format": wire.FORMAT, "version": version, "seq": seq, "board": profile["name"],
                "runtime": profile["runtime"], "mpy": _mpy_version(slot_dir, rels) or mpy,
                "mpy_arch": mpy_arch if profile["runtime"] == "micropython" else None, "files": files}
    if romslot.ROM_IMAGE in rels:
        manifest["code"] = CODE_IN_ROM
    return manifest


def rom_code(slot_dir, rels, room=None):
    """Turn a written slot into a ROM bundle's (docs/ota.md "Code in ROM"): its code folders
    and its models' .tflite packed into one ROMFS image, romslot.ROM_IMAGE, which the board copies
    into the slot's ROM segment; the models also stay files. Returns (the slot's files now, the .mpy version of the code)."""
    from ..install import romdeploy
    mpy = _mpy_version(slot_dir, rels)
    data = romdeploy.slot_image(slot_dir, room)
    for top in romdeploy.CODE_DIRS:
        shutil.rmtree(os.path.join(slot_dir, top), ignore_errors=True)
    with open(os.path.join(slot_dir, romslot.ROM_IMAGE), "wb") as f:
        f.write(data)
    kept = [rel for rel in rels if rel.split("/", 1)[0] not in romdeploy.CODE_DIRS]
    return kept + [romslot.ROM_IMAGE], mpy


SEQ_FILE = "bundle.seq"


def next_seq(path=None):
    """The next bundle sequence number, kept in $EDGEFLEET_HOME/bundle.seq: above the last one
    handed out and at least the Unix time, so it still rises if that file is lost."""
    path = path or os.path.join(keys.home(), SEQ_FILE)
    try:
        with open(path) as f:
            last = int(f.read().strip() or 0)
    except FileNotFoundError:
        last = 0
    except ValueError:
        raise BundleError("%s does not hold a sequence number" % path)
    seq = max(last + 1, int(time.time()))
    write_private(path, "%d\n" % seq)
    return seq


def signed_message(head_and_manifest):
    return wire.signed_message(hashlib.sha256(head_and_manifest).digest())


def pack(manifest, slot_dir, key):
    """The bundle's bytes for a manifest over files in slot_dir, signed with the private `key`."""
    raw = manifest_bytes(manifest)
    if len(raw) > wire.MAX_MANIFEST:
        raise BundleError("manifest of %d bytes is over the %d a board reads" % (len(raw), wire.MAX_MANIFEST))
    parse_manifest(raw)   # what a board checks first: format, version, seq, file lines
    head = wire.MAGIC + struct.pack(">I", len(raw))
    out = io.BytesIO()
    out.write(head + raw)
    out.write(keys.sign(key, signed_message(head + raw)))
    _write_bodies(out, manifest, slot_dir)
    return out.getvalue()


def _write_bodies(out, manifest, slot_dir):
    for rel, _, _ in manifest["files"]:
        with open(os.path.join(slot_dir, rel), "rb") as f:
            out.write(f.read())


def build(board, version, key, models=None, mpy_arch="profile", simulated=None, seq=None, code_store=None):
    """A signed bundle (bytes) for a board name: its slot's code and `models` (default all).

    mpy_arch: "profile" compiles for the board's own architecture (its profile's mpy_arch);
    "x64" for the simulated boards on this machine; None ships .py sources.
    simulated: for simulated boards (the slot then carries the simulation layer, hal_sim and
    its power model, which a real board never gets); None means "when mpy_arch is x64", the
    code only the simulated MCU boards load. seq: the sequence number (default next_seq()).
    code_store: "romfs" carries a MicroPython board's code as a ROM image for its ROM partition,
    "files" as .mpy files; None: the board profile's "code_store" (default files)."""
    with _slot(board, version, models, mpy_arch, simulated) as (slot_dir, rels, profile, mpy_arch):
        store = code_store or profile.get("code_store", "files")
        if store not in CODE_STORES:
            raise BundleError("code store %r is none of %s" % (store, ", ".join(CODE_STORES)))
        mpy = None
        if store == CODE_IN_ROM:
            if profile["runtime"] != "micropython" or not mpy_arch:
                raise BundleError("only a MicroPython bundle of .mpy code can run from ROM (board %s, arch %s)"
                                  % (board, mpy_arch))
            rels, mpy = rom_code(slot_dir, rels, profile.get("rom", {}).get("segment_bytes"))
            # The image carries the models' .tflite beside the code: refused here, before any
            # board changes, when it outgrows the profile's ROM segment.
            image_bytes = os.path.getsize(os.path.join(slot_dir, romslot.ROM_IMAGE))
            segment = profile.get("rom", {}).get("segment_bytes")
            if segment and image_bytes > segment:
                raise BundleError("the ROM image (code and models' .tflite, %d bytes) is larger than %s's %d-byte "
                                  "ROM segment: bundle fewer models (--models) or --code-store files"
                                  % (image_bytes, board, segment))
        seq = next_seq() if seq is None else seq
        return pack(manifest_for(slot_dir, rels, profile, version, mpy_arch, seq, mpy), slot_dir, key)


@contextlib.contextmanager
def _slot(board, version, models, mpy_arch, simulated):
    """A temporary folder holding what one slot of `board` gets: (folder, files, profile, arch)."""
    try:
        profile = catalog.load(board)
    except Exception as e:
        raise BundleError("unknown board %r: %s" % (board, e))
    if mpy_arch == "profile":
        mpy_arch = profile.get("mpy_arch")
    if not isinstance(version, str) or not version:
        raise BundleError("a bundle needs a version string")
    with tempfile.TemporaryDirectory(prefix="edgefleet-bundle-") as slot_dir:
        if simulated is None:
            simulated = mpy_arch == image.SIM_MPY_ARCH
        rels = image.write_slot(slot_dir, profile, models, mpy_arch, simulated)
        size = sum(os.path.getsize(os.path.join(slot_dir, r)) for r in rels)
        if size > profile["fs_bytes"] // 2:
            raise BundleError("bundle contents of %d bytes do not fit one of two slots in %s's %d-byte filesystem"
                              % (size, board, profile["fs_bytes"]))
        yield slot_dir, rels, profile, mpy_arch


# -- migrating HMAC boards (docs/ota.md, "Migrating HMAC boards") ----------------------------

LEGACY_MAGIC = b"EFB1"
LEGACY_FORMAT = 1


def build_migration(board, version, key, legacy_key, models=None, mpy_arch="profile", simulated=None):
    """The one update a board from before Ed25519 takes: this firmware, in the old EFB1 format
    (HMAC-SHA256 under the old shared fleet key, `legacy_key`), with the public half of `key`
    in the slot as keys.BOARD_FILE. Once that version is confirmed, the board installs the
    public key at its flash root and deletes its fleet.key (firmware/health.py: adopt_public_key)."""
    with _slot(board, version, models, mpy_arch, simulated) as (slot_dir, rels, profile, mpy_arch):
        keys.install_public(slot_dir, key)
        rels = rels + [keys.BOARD_FILE]
        manifest = manifest_for(slot_dir, rels, profile, version, mpy_arch)
        manifest["format"] = LEGACY_FORMAT
        del manifest["seq"]
        raw = manifest_bytes(manifest)
        head = LEGACY_MAGIC + struct.pack(">I", len(raw))
        out = io.BytesIO()
        out.write(head + raw)
        out.write(hmac.new(legacy_key, head + raw, hashlib.sha256).digest())
        _write_bodies(out, manifest, slot_dir)
        return out.getvalue()


def bundle_id(data):
    """A bundle's id: the start of its sha256, so the same bytes always get the same id."""
    return hashlib.sha256(data).hexdigest()[:16]


def inspect(data, key=None, path=None):
    """Parse a bundle's bytes with the board's codec (firmware/bundle.py); with a key (the
    controller's private signing key) check that it signed the bundle, and every file's hash.

    Returns {"manifest", "id", "bytes", "signed_ok"}; raises CorruptBundle/BadSignature
    (firmware/update_errors.py), their message prefixed with `path`."""
    where = path or "bundle"
    try:
        return _inspect(data, key)
    except BundleError as e:
        raise type(e)("%s: %s" % (where, e))


def inspect_migration(data, key, legacy_key, path=None):
    """Check a migration bundle (build_migration) as `deploy` must before sending it: its HMAC
    under the old fleet key, every file's hash, and that the public key it installs is the one
    of this controller's signing key `key`. Returns what inspect() does."""
    where = path or "bundle"
    try:
        if data[:4] != LEGACY_MAGIC or len(data) < 8:
            raise CorruptBundle("not an HMAC migration bundle (magic %r)" % bytes(data[:4]))
        length = struct.unpack(">I", data[4:8])[0]
        head_manifest, mac = data[:8 + length], data[8 + length:8 + length + 32]
        if not hmac.compare_digest(hmac.new(legacy_key, head_manifest, hashlib.sha256).digest(), mac):
            raise BadSignature("migration bundle does not verify under the old fleet key")
        f = io.BytesIO(data[8:8 + length])
        manifest = wire.read_header(f)
        if not isinstance(manifest, dict) or manifest.get("format") != LEGACY_FORMAT:
            raise CorruptBundle("migration bundle manifest is not format %d" % LEGACY_FORMAT)
        manifest["files"] = [list(wire.parse_entry(f.readline())) for _ in range(manifest.get("files", 0))]
        _check_bodies(data, 8 + length + 32, manifest)
        off = 8 + length + 32
        installs = None
        for rel, size, _ in manifest["files"]:
            if rel == keys.BOARD_FILE:
                installs = data[off:off + size].decode()
            off += size
        if installs is None or keys.parse(installs) != keys.public(key):
            raise BadSignature("migration bundle installs a public key other than this controller's")
    except BundleError as e:
        raise type(e)("%s: %s" % (where, e))
    return {"manifest": manifest, "id": bundle_id(data), "bytes": len(data), "signed_ok": True}


def _inspect(data, key):
    if len(data) < 8:
        raise CorruptBundle("not an edgefleet bundle (%d bytes)" % len(data))
    length = wire.manifest_length(data[:8])
    if len(data) < 8 + length + wire.SIG_BYTES:
        raise CorruptBundle("truncated in its header (manifest length %d, %d bytes)" % (length, len(data)))
    manifest = parse_manifest(data[8:8 + length])
    signed_ok = None
    if key is not None:
        sig = data[8 + length:8 + length + wire.SIG_BYTES]
        signed_ok = keys.verify(keys.public(key), sig, signed_message(data[:8 + length]))
        if not signed_ok:
            raise BadSignature("signature does not verify under this controller's signing key (unsigned, "
                               "tampered, or signed with another key)")
    _check_bodies(data, 8 + length + wire.SIG_BYTES, manifest)
    return {"manifest": manifest, "id": bundle_id(data), "bytes": len(data), "signed_ok": signed_ok}


def _check_bodies(data, off, manifest):
    for rel, size, digest in manifest["files"]:
        body = data[off:off + size]
        if len(body) != size:
            raise CorruptBundle("truncated in %s (%d of %d bytes)" % (rel, len(body), size))
        if hashlib.sha256(body).hexdigest() != digest:
            raise CorruptBundle("%s does not match its sha256" % rel)
        off += size
    if off != len(data):
        raise CorruptBundle("%d bytes after the last file" % (len(data) - off))


def read(path, key=None):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BundleError("cannot read bundle %s: %s" % (path, e))
    return data, inspect(data, key, path)
