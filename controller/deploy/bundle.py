"""Update bundles (docs/ota.md): build, sign and inspect.

A bundle holds one board's slot - firmware, HAL modules (MicroPython code precompiled with
mpy-cross) and models - behind a manifest that lists every file with its size and sha256, signed
with HMAC-SHA256 under the fleet key (controller/install/keys.py). The key itself never goes in. The
byte layout is firmware/bundle.py's, which is also what a board runs to verify and unpack one.
"""
import hashlib
import hmac
import io
import json
import os
import struct
import tempfile

from edgefleet.boards import catalog
from edgefleet.firmware import bundle as wire

from ..install import image
from ..errors import BadSignature, BundleError, CorruptBundle

CHUNK = 65536


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
    """The manifest dict (header keys plus 'files': [[path, size, sha256]]) from its bytes."""
    text = raw.decode()
    lines = text.split("\n")
    header = json.loads(lines[0])
    count = header.pop("files")
    entries = [line.split(" ", 2) for line in lines[1:1 + count]]
    if len(entries) != count or any(len(e) != 3 for e in entries) or lines[1 + count:] != [""]:
        raise ValueError("manifest lists %d files, its header says %d" % (len(entries), count))
    header["files"] = [[path, int(size), digest] for size, digest, path in entries]
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


def manifest_for(slot_dir, rels, profile, version, mpy_arch=None):
    files = [[rel, os.path.getsize(os.path.join(slot_dir, rel)), _sha256_file(os.path.join(slot_dir, rel))]
             for rel in rels]
    return {"format": wire.FORMAT, "version": version, "board": profile["name"], "runtime": profile["runtime"],
            "mpy": _mpy_version(slot_dir, rels), "mpy_arch": mpy_arch if profile["runtime"] == "micropython" else None,
            "files": files}


def pack(manifest, slot_dir, key):
    """The signed bundle's bytes for a manifest over files in slot_dir."""
    raw = manifest_bytes(manifest)
    if len(raw) > wire.MAX_MANIFEST:
        raise BundleError("manifest of %d bytes is over the %d a board reads" % (len(raw), wire.MAX_MANIFEST))
    head = wire.MAGIC + struct.pack(">I", len(raw))
    out = io.BytesIO()
    out.write(head + raw)
    out.write(hmac.new(key, head + raw, hashlib.sha256).digest())
    for rel, _, _ in manifest["files"]:
        with open(os.path.join(slot_dir, rel), "rb") as f:
            out.write(f.read())
    return out.getvalue()


def build(board, version, key, models=None, mpy_arch="profile"):
    """A signed bundle (bytes) for a board name: its slot's code and `models` (default all).

    mpy_arch: "profile" compiles for the board's own architecture (its profile's mpy_arch);
    "x64" for the simulated boards on this machine; None ships .py sources."""
    try:
        profile = catalog.load(board)
    except Exception as e:
        raise BundleError("unknown board %r: %s" % (board, e))
    if mpy_arch == "profile":
        mpy_arch = profile.get("mpy_arch")
    if not isinstance(version, str) or not version:
        raise BundleError("a bundle needs a version string")
    with tempfile.TemporaryDirectory(prefix="edgefleet-bundle-") as slot_dir:
        rels = image.write_slot(slot_dir, profile, models, mpy_arch)
        size = sum(os.path.getsize(os.path.join(slot_dir, r)) for r in rels)
        if size > profile["fs_bytes"] // 2:
            raise BundleError("bundle contents of %d bytes do not fit one of two slots in %s's %d-byte filesystem"
                              % (size, board, profile["fs_bytes"]))
        return pack(manifest_for(slot_dir, rels, profile, version, mpy_arch), slot_dir, key)


def bundle_id(data):
    """A bundle's id: the start of its sha256, so the same bytes always get the same id."""
    return hashlib.sha256(data).hexdigest()[:16]


def inspect(data, key=None, path=None):
    """Parse a bundle's bytes; with a key, check its signature and every file's hash too.

    Returns {"manifest", "id", "bytes", "signed_ok"}; raises CorruptBundle/BadSignature."""
    where = path or "bundle"
    if len(data) < 8 or data[:4] != wire.MAGIC:
        raise CorruptBundle("%s is not an edgefleet bundle" % where, path)
    length = struct.unpack(">I", data[4:8])[0]
    if not 2 <= length <= wire.MAX_MANIFEST or len(data) < 8 + length + wire.MAC_BYTES:
        raise CorruptBundle("%s: truncated or bad header (manifest length %d, %d bytes)" % (where, length, len(data)), path)
    raw = data[8:8 + length]
    mac = data[8 + length:8 + length + wire.MAC_BYTES]
    try:
        manifest = parse_manifest(raw)
        files = manifest["files"]
    except (ValueError, KeyError, TypeError, UnicodeError) as e:
        raise CorruptBundle("%s: manifest is not valid (%s)" % (where, e), path)
    signed_ok = None
    if key is not None:
        signed_ok = hmac.compare_digest(hmac.new(key, data[:8 + length], hashlib.sha256).digest(), mac)
        if not signed_ok:
            raise BadSignature("%s: signature does not verify under this fleet key (unsigned, tampered, or "
                               "signed with another key)" % where, path)
    off = 8 + length + wire.MAC_BYTES
    for rel, size, digest in files:
        body = data[off:off + size]
        if len(body) != size:
            raise CorruptBundle("%s: truncated in %s (%d of %d bytes)" % (where, rel, len(body), size), path)
        if hashlib.sha256(body).hexdigest() != digest:
            raise CorruptBundle("%s: %s does not match its sha256" % (where, rel), path)
        off += size
    if off != len(data):
        raise CorruptBundle("%s: %d bytes after the last file" % (where, len(data) - off), path)
    return {"manifest": manifest, "id": bundle_id(data), "bytes": len(data), "signed_ok": signed_ok}


def read(path, key=None):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BundleError("cannot read bundle %s: %s" % (path, e), path)
    return data, inspect(data, key, path)
