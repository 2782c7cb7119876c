# Update bundles, read as a stream: a board verifies and unpacks one chunk at a time, hashing
# as it writes, and never holds the bundle - nor even its manifest - in RAM.
#
# Layout (docs/ota.md):  MAGIC(4) | manifest length (4, big-endian) | manifest |
#                        Ed25519 signature (64) of signed_message(...) | file bodies
# The manifest is text: one JSON line of metadata (format, version, seq, board, runtime, mpy,
# files = the file count), then one line per file, "SIZE SHA256 PATH", in the order the bodies
# follow. It pins every file by size and hash, so its signature covers the whole bundle; it
# comes first, so an unsigned, tampered or wrong-board bundle is refused before any file is
# written. What is signed is MAGIC + sha256(MAGIC + length + manifest): the manifest streams
# through hashlib.sha256 (native on every port) and Ed25519's own SHA-512 - which no
# MicroPython port has natively - runs over 100 bytes. The signing key lives only on the
# controller host; a board holds the public key. The manifest streams to the slot's MANIFEST
# file as it arrives and is read back a line at a time: a 40-file manifest parsed whole needs a
# contiguous 5 KB that a fragmented 100 KB heap may not have.
import binascii
import hashlib
import json
import os

from .update_errors import BadSignature, CorruptBundle, TruncatedBundle, WrongBoard

MAGIC = b"EFB2"
FORMAT = 2
SIG_BYTES = 64
PUBLIC_KEY_BYTES = 32
MAX_MANIFEST = 65536
SLOT_MANIFEST = "MANIFEST"
_PART = SLOT_MANIFEST + ".part"

_HEADER, _MANIFEST, _SIG, _FILES, _DONE = 0, 1, 2, 3, 4


def hexdigest(h):
    return binascii.hexlify(h.digest()).decode()


def verify_signature(public_key, signature, message):
    """Ed25519, with the verifier imported for the check and dropped after it: it runs once per
    update, and its ~6.5 KB of code and constants are better spent on the files that follow."""
    from . import ed25519, release_module
    try:
        return ed25519.verify(public_key, signature, message)
    finally:
        release_module(ed25519)


def check_path(path):
    """A manifest path must stay inside the slot: relative, no '..', no empty parts."""
    if not path or path[0] == "/" or "\\" in path:
        raise CorruptBundle("bad file path %r in manifest" % (path,))
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise CorruptBundle("bad file path %r in manifest" % (path,))
    if path in (SLOT_MANIFEST, _PART):
        raise CorruptBundle("the manifest may not list %s" % path)


def manifest_length(head):
    """The manifest's length from a bundle's first 8 bytes; CorruptBundle unless they start one."""
    if bytes(head[:4]) != MAGIC:
        raise CorruptBundle("not an edgefleet bundle (magic %r)" % bytes(head[:4]))
    length = (head[4] << 24) | (head[5] << 16) | (head[6] << 8) | head[7]
    if not 2 <= length <= MAX_MANIFEST:
        raise CorruptBundle("manifest length %d out of range" % length)
    return length


def check_format(header):
    """Raise CorruptBundle unless a manifest header is one this codec reads."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CorruptBundle("unknown bundle format %r (this node reads %d)" % (
            header.get("format") if isinstance(header, dict) else None, FORMAT))
    if not isinstance(header.get("version"), str) or not isinstance(header.get("files"), int):
        raise CorruptBundle("manifest lacks its version or file count")
    seq = header.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise CorruptBundle("manifest lacks its sequence number (seq, a positive integer)")


def signed_message(manifest_sha256):
    """What the Ed25519 signature covers, from sha256(MAGIC + length + manifest)."""
    return MAGIC + manifest_sha256


def check_header(header, board, runtime, mpy):
    """Raise WrongBoard / CorruptBundle unless the manifest's metadata is for this board."""
    check_format(header)
    if header.get("board") != board:
        raise WrongBoard("bundle is for board %r, this node is %r" % (header.get("board"), board))
    if header.get("runtime") != runtime:
        raise WrongBoard("bundle is for runtime %r, this node runs %r" % (header.get("runtime"), runtime))
    if mpy is not None and header.get("mpy") is not None and header["mpy"] != mpy:
        raise WrongBoard("bundle holds .mpy version %r, this MicroPython loads %r" % (header["mpy"], mpy))


def parse_entry(line):
    """(path, size, sha256 hex) from a manifest file line."""
    try:
        line = line.decode() if not isinstance(line, str) else line
        size, digest, path = line.rstrip("\n").split(" ", 2)
        size = int(size)
    except (ValueError, UnicodeError):
        raise CorruptBundle("bad manifest file line %r" % (line,))
    if size < 0 or len(digest) != 64:
        raise CorruptBundle("bad manifest file line %r" % (line,))
    check_path(path)
    return path, size, digest


def read_header(f):
    try:
        return json.loads(f.readline())
    except (ValueError, UnicodeError, TypeError):
        raise CorruptBundle("manifest header is not JSON")


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

    def __init__(self, public_key, board, runtime, dest, mpy=None, manifest_part=None, on_verified=None):
        """public_key: the 32-byte Ed25519 key bundles must verify under;
        manifest_part: where the manifest streams to until the bundle is complete (default
        inside dest); on_verified: called once the manifest's signature and board check out,
        before the first file is written - the moment to clear the destination slot."""
        self.public_key = public_key
        self.board = board
        self.runtime = runtime
        self.mpy = mpy
        self.dest = dest
        self.stage = _HEADER
        self.need = 8          # bytes the current stage takes
        self.have = 0
        self.buf = bytearray(8)
        self.header = None
        self._digest = None    # sha256 over MAGIC + length + manifest, while the manifest streams
        self.signature = None  # the bundle's signature, once verified (its identity for the node)
        self._manifest = None  # the manifest file: written while it streams, then read line by line
        self._index = 0
        self._entry = None
        self._file = None
        self._hash = None
        self.part = manifest_part or dest + "/" + _PART
        self.on_verified = on_verified

    def feed(self, data):
        data = memoryview(data)
        i = 0
        n = len(data)
        while i < n:
            if self.stage == _DONE:
                raise CorruptBundle("%d bytes past the end of the last file" % (n - i))
            take = min(self.need - self.have, n - i)
            piece = data[i:i + take]
            i += take
            self.have += take
            if self.stage == _FILES:
                self._file.write(piece)
                self._hash.update(piece)
            elif self.stage == _MANIFEST:
                self._manifest.write(piece)
                self._digest.update(piece)
            else:
                self.buf[self.have - take:self.have] = piece
            if self.have == self.need:
                self._stage_done()

    def _stage_done(self):
        self.have = 0
        if self.stage == _HEADER:
            length = manifest_length(self.buf)
            self._digest = hashlib.sha256(bytes(self.buf))
            _makedirs(self.part)
            self._manifest = open(self.part, "wb")
            self.stage, self.need = _MANIFEST, length
        elif self.stage == _MANIFEST:
            self._manifest.close()
            self._manifest = None
            self.buf = bytearray(SIG_BYTES)
            self.stage, self.need = _SIG, SIG_BYTES
        elif self.stage == _SIG:
            message = signed_message(self._digest.digest())
            self._digest = None
            if not verify_signature(self.public_key, self.buf, message):
                raise BadSignature("bundle signature does not verify under this board's public key "
                                   "(unsigned, tampered or signed with another key)")
            self.signature = bytes(self.buf)
            self.buf = None
            self._manifest = open(self.part, "rb")
            self.header = read_header(self._manifest)
            check_header(self.header, self.board, self.runtime, self.mpy)
            if self.on_verified is not None:
                self.on_verified()
            self.stage = _FILES
            self._open_next()
        elif self.stage == _FILES:
            self._close_file()
            self._open_next()

    def _open_next(self):
        while self._index < self.header["files"]:
            line = self._manifest.readline()
            if not line:
                raise CorruptBundle("manifest lists %d of its %d files" % (self._index, self.header["files"]))
            path, size, digest = self._entry = parse_entry(line)
            target = self.dest + "/" + path
            _makedirs(target)
            self._file = open(target, "wb")
            self._hash = hashlib.sha256()
            self.need, self.have = size, 0
            if size > 0:
                return
            self._close_file()
        self._manifest.close()
        self._manifest = None
        self.stage = _DONE

    def _close_file(self):
        path, _, digest = self._entry
        self._file.close()
        self._file = None
        self._index += 1
        if hexdigest(self._hash) != digest:
            raise CorruptBundle("file %s does not match its sha256 in the manifest" % path)
        self._hash = None

    def finish(self):
        """After the last byte: the manifest header, if every file arrived whole; else TruncatedBundle."""
        if self.stage != _DONE:
            where = self.where()
            self.close()
            raise TruncatedBundle("bundle ended early (%s)" % where)
        os.rename(self.part, self.dest + "/" + SLOT_MANIFEST)
        return self.header

    def where(self):
        if self.stage < _FILES:
            return "in its header"
        if self.stage == _FILES:
            return "in file %s" % self._entry[0]
        return "complete"

    def close(self):
        for f in (self._file, self._manifest):
            if f is not None:
                f.close()
        self._file = self._manifest = None


def slot_entry(slot_dir, path):
    """(size, sha256 hex) of `path` as the slot's manifest lists it; CorruptBundle if it does not."""
    try:
        f = open(slot_dir + "/" + SLOT_MANIFEST, "rb")
    except OSError:
        raise CorruptBundle("slot %s has no manifest" % slot_dir)
    with f:
        header = read_header(f)
        for _ in range(header.get("files", 0) if isinstance(header, dict) else 0):
            name, size, digest = parse_entry(f.readline())
            if name == path:
                return size, digest
    raise CorruptBundle("slot %s: the manifest does not list %s" % (slot_dir, path))


def verify_slot(slot_dir):
    """Re-read every file a slot's manifest lists and check its hash; returns the manifest header.

    Run before a slot becomes active: what flash holds, not what was streamed, is what boots."""
    try:
        f = open(slot_dir + "/" + SLOT_MANIFEST, "rb")
    except OSError:
        raise CorruptBundle("slot %s has no manifest" % slot_dir)
    buf = bytearray(512)
    with f:
        header = read_header(f)
        count = header.get("files") if isinstance(header, dict) else None
        if not isinstance(count, int):
            raise CorruptBundle("slot %s: manifest header lacks its file count" % slot_dir)
        for _ in range(count):
            path, size, digest = parse_entry(f.readline())
            h = hashlib.sha256()
            total = 0
            try:
                with open(slot_dir + "/" + path, "rb") as body:
                    while True:
                        n = body.readinto(buf)
                        if not n:
                            break
                        h.update(memoryview(buf)[:n])
                        total += n
            except OSError:
                raise CorruptBundle("slot %s lacks %s" % (slot_dir, path))
            if total != size or hexdigest(h) != digest:
                raise CorruptBundle("slot %s: %s does not match its manifest" % (slot_dir, path))
    return header
