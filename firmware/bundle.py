# Update bundles, read as a stream: a board verifies and unpacks one chunk at a time, hashing
# as it writes, and never holds the bundle in RAM.
#
# Layout (docs/ota.md):  MAGIC(4) | manifest length (4, big-endian) | manifest JSON |
#                        HMAC-SHA256(fleet key, MAGIC + length + manifest) (32) | file bodies
# The manifest pins every file by size and sha256, so its MAC covers the whole bundle; it comes
# first, so an unsigned, tampered or wrong-board bundle is refused before anything is written.
import binascii
import hashlib
import json
import os

from . import hmac256
from .errors import BadSignature, CorruptBundle, TruncatedBundle, WrongBoard

MAGIC = b"EFB1"
FORMAT = 1
MAC_BYTES = 32
MAX_MANIFEST = 16384
SLOT_MANIFEST = "manifest.json"

_HEADER, _MANIFEST, _MAC, _FILES, _DONE = 0, 1, 2, 3, 4


def hexdigest(h):
    return binascii.hexlify(h.digest()).decode()


def check_path(path):
    """A manifest path must stay inside the slot: relative, no '..', no empty parts."""
    if not isinstance(path, str) or not path or path[0] == "/" or "\\" in path:
        raise CorruptBundle("bad file path %r in manifest" % (path,))
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise CorruptBundle("bad file path %r in manifest" % (path,))
    if path == SLOT_MANIFEST:
        raise CorruptBundle("the manifest may not list %s" % SLOT_MANIFEST)


def check_manifest(manifest, board, runtime, mpy):
    """Raise WrongBoard / CorruptBundle unless the manifest is for this board and well formed."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptBundle("unknown bundle format %r (this node reads %d)" % (
            manifest.get("format") if isinstance(manifest, dict) else None, FORMAT))
    if not isinstance(manifest.get("version"), str) or not isinstance(manifest.get("files"), list):
        raise CorruptBundle("manifest lacks its version or file list")
    if manifest.get("board") != board:
        raise WrongBoard("bundle is for board %r, this node is %r" % (manifest.get("board"), board))
    if manifest.get("runtime") != runtime:
        raise WrongBoard("bundle is for runtime %r, this node runs %r" % (manifest.get("runtime"), runtime))
    if mpy is not None and manifest.get("mpy") is not None and manifest["mpy"] != mpy:
        raise WrongBoard("bundle holds .mpy version %r, this MicroPython loads %r" % (manifest["mpy"], mpy))
    for entry in manifest["files"]:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[1], int) and entry[1] >= 0
                and isinstance(entry[2], str) and len(entry[2]) == 64):
            raise CorruptBundle("bad manifest file entry %r" % (entry,))
        check_path(entry[0])


def _makedirs(path):
    """Create the folders above a file path, like os.makedirs (which MicroPython lacks)."""
    parts = path.split("/")[:-1]
    built = "/" if path[0] == "/" else ""
    for part in parts:
        if not part:
            continue
        built = built + part if built in ("", "/") else built + "/" + part
        try:
            os.mkdir(built)
        except OSError:
            pass


class BundleReader:
    """Feed a bundle's bytes in order; files land under `dest` (a slot directory).

    Raises a BundleError subclass at the first byte that proves the bundle bad."""

    def __init__(self, key, board, runtime, dest, mpy=None):
        self.key = key
        self.board = board
        self.runtime = runtime
        self.mpy = mpy
        self.dest = dest
        self.stage = _HEADER
        self.need = 8
        self.buf = bytearray()
        self.manifest = None
        self.manifest_raw = None
        self._mac = None
        self._index = 0
        self._file = None
        self._hash = None
        self._left = 0

    def feed(self, data):
        data = memoryview(data)
        i = 0
        n = len(data)
        while i < n:
            if self.stage == _FILES:
                take = min(self._left, n - i)
                piece = data[i:i + take]
                self._file.write(piece)
                self._hash.update(piece)
                self._left -= take
                i += take
                if self._left == 0:
                    self._close_file()
                continue
            if self.stage == _DONE:
                raise CorruptBundle("%d bytes past the end of the last file" % (n - i))
            take = min(self.need - len(self.buf), n - i)
            self.buf.extend(data[i:i + take])
            i += take
            if len(self.buf) == self.need:
                self._header_part_done()

    def _header_part_done(self):
        buf = bytes(self.buf)
        self.buf = bytearray()
        if self.stage == _HEADER:
            if buf[:4] != MAGIC:
                raise CorruptBundle("not an edgefleet bundle (magic %r)" % buf[:4])
            length = int.from_bytes(buf[4:8], "big")
            if not 2 <= length <= MAX_MANIFEST:
                raise CorruptBundle("manifest length %d out of range" % length)
            self._mac = hmac256.Hmac(self.key, buf)
            self.stage, self.need = _MANIFEST, length
        elif self.stage == _MANIFEST:
            self._mac.update(buf)
            self.manifest_raw = buf
            self.stage, self.need = _MAC, MAC_BYTES
        elif self.stage == _MAC:
            if not hmac256.equal(self._mac.digest(), buf):
                raise BadSignature("bundle signature does not verify under this board's fleet key "
                                   "(unsigned, tampered or signed with another key)")
            self._mac = None
            try:
                manifest = json.loads(self.manifest_raw.decode())
            except (ValueError, UnicodeError):
                raise CorruptBundle("manifest is not JSON")
            check_manifest(manifest, self.board, self.runtime, self.mpy)
            self.manifest = manifest
            self.stage = _FILES
            self._open_next()

    def _open_next(self):
        files = self.manifest["files"]
        while self._index < len(files):
            path, size = files[self._index][0], files[self._index][1]
            target = self.dest + "/" + path
            _makedirs(target)
            self._file = open(target, "wb")
            self._hash = hashlib.sha256()
            self._left = size
            if size > 0:
                return
            self._close_file(advance=False)
            self._index += 1
        self.stage = _DONE

    def _close_file(self, advance=True):
        entry = self.manifest["files"][self._index]
        self._file.close()
        self._file = None
        if hexdigest(self._hash) != entry[2]:
            raise CorruptBundle("file %s does not match its sha256 in the manifest" % entry[0])
        self._hash = None
        if advance:
            self._index += 1
            self._open_next()

    def finish(self):
        """After the last byte: the manifest, if every file arrived whole; else TruncatedBundle."""
        if self.stage != _DONE:
            self.close()
            raise TruncatedBundle("bundle ended early (%s)" % self.where())
        with open(self.dest + "/" + SLOT_MANIFEST, "w") as f:
            f.write(self.manifest_raw.decode())
        return self.manifest

    def where(self):
        if self.stage < _FILES:
            return "in its header"
        if self.stage == _FILES:
            return "in file %s" % self.manifest["files"][self._index][0]
        return "complete"

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


def verify_slot(slot_dir):
    """Re-read every file a slot's manifest lists and check its hash; returns the manifest.

    Run before a slot becomes active: what flash holds, not what was streamed, is what boots."""
    try:
        with open(slot_dir + "/" + SLOT_MANIFEST) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        raise CorruptBundle("slot %s has no readable manifest" % slot_dir)
    buf = bytearray(512)
    for path, size, digest in manifest["files"]:
        h = hashlib.sha256()
        total = 0
        try:
            with open(slot_dir + "/" + path, "rb") as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    h.update(memoryview(buf)[:n])
                    total += n
        except OSError:
            raise CorruptBundle("slot %s lacks %s" % (slot_dir, path))
        if total != size or hexdigest(h) != digest:
            raise CorruptBundle("slot %s: %s does not match its manifest" % (slot_dir, path))
    return manifest
