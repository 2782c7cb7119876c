"""`edgefleet flash`: installing a board image on a MicroPython board over its serial REPL.

What goes on the board: an A/B image (docs/ota.md) as controller/install/image.py's
write_slot_set() builds it: the firmware and HAL modules (.mpy) and the models in a slot with
its MANIFEST, the slot pointer (slots.json), the boot selector (main.py, slots.mpy); beside them
config.json, the public half of the bundle signing key (keys.BOARD_FILE; the private key stays
on this host) and, for TLS, the fleet CA. So a flashed board takes updates from its first boot.

How, with serialrepl.ReplLink's primitives and the functions of controller/install/flash_agent.py, which
is sent into the board's RAM once per session:
1. The board says what it is (ef_probe): .mpy version, its machine (checked against --board),
   its config.json's node id and broker, and the slot its pointer names, if any.
2. The slot: a board without slots gets the code in slot_a. A slotted board keeps its active
   slot when that holds exactly this code (a re-flash that changes only config.json), else the
   code goes into the other slot, as a fresh slot set: the slot the board boots is never
   half-written.
3. The board hashes its copy of the image's files (sha256, on the board) into one digest over
   the tree, compared with the same digest of the local tree: an unchanged board costs one exec
   and a 64-character answer. Otherwise it lists each file with its sha256, and only the files
   that differ are sent.
4. A file goes in chunks of CHUNK_BYTES, one exec each. When the board has the `deflate` module
   (MicroPython >= 1.21) a chunk is raw-deflated with a 2**WBITS-byte window (the board's
   decompressor then needs that much RAM, which fits the smallest heap) unless that does not
   make it smaller; then base64. The board writes PATH.part, checks its sha256, and renames it
   over PATH: a transfer cut short never leaves a half-written file where the firmware reads it.
   Order (write_order): the slot's files, its MANIFEST, then the top-level files, slots.json
   and main.py last. A power cut at any point leaves a board that boots a complete version,
   the one it booted before until the pointer (or, converting a flat board, main.py) is
   replaced, the new one after; or an empty board at the REPL. The next flash sends only what
   is missing.
5. Removed afterwards: files in the image's folders that the image no longer has, the other
   slot, and a flat image's code folders (firmware/, boards/, models/ at the root, from an
   edgefleet before slots), so old code cannot shadow the slot. Nothing else on the board is
   touched: the node's state (data/: boot counter, outbox, crash records, cached assignment;
   ota-floor.json), boot.py, a user's files.
6. A soft reset, after which the board boots the slot.

The watchdog: a node arms the board's hardware watchdog (machine.WDT, which nothing stops on
rp2 or ESP32), and the Ctrl-C that stops it leaves nobody feeding it, while a conversion or a
slot's write at the REPL takes many seconds. The HAL's watchdog_start leaves the feed in
main.py's globals as `ef_wdt`, which are the REPL's (boards/mcu_main.py); flash_release keeps
it, and the agent calls it (ef_feed) at each call, i.e. between every command and every
CHUNK_BYTES chunk, for each file it hashes, about once a second while this host still compiles
the slot's code, and once right before the soft reset, so the new boot has a whole timeout to
arm it again and feed it. A chunk must cross the link within the
timeout (4 KB at 115200 baud: ~0.4 s; at 9600: ~4.5 s, of the profiles' ~8 s). A board whose
watchdog was never armed has no ef_wdt and is left alone: the flasher never arms one.

The node id, broker and Wi-Fi settings in config.json come from the caller, else from the
config.json already on the board (so a re-flash keeps them; no Wi-Fi settings at all is a board
on a wire, or a simulated one), else the node id is the board name and the last six hex
digits of machine.unique_id(); a first flash with no broker given is an error.
"""
import binascii
import hashlib
import os
import re
import tempfile
import threading
import time
import zlib

from edgefleet.boards import catalog
from edgefleet.firmware import slots

from . import image, keys, nodelink, romdeploy
from .. import choices
from ..errors import ConfigError, FlashError
from .serialrepl import LinkLost, NoAnswer, ReplExecError, ReplLink

CHUNK_BYTES = 4096
# Where a board's code goes: .mpy files in the slot (the default), or the ROM partition.
CODE_STORES = ("files", "romfs")
WBITS = 10
ENOSPC = 28
HERE = os.path.dirname(os.path.abspath(__file__))
AGENT_SOURCE = os.path.join(HERE, "flash_agent.py")
BOOT_SOURCE = os.path.join(HERE, "flash_boot.py")
RELEASE_SOURCE = os.path.join(HERE, "flash_release.py")
# sys.implementation._mpy >> 10 and an .mpy header's arch field index this list.
MPY_ARCHS = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
             "xtensa", "xtensawin", "rv32imc", "rv64imc")


class SyncResult:
    """What a sync did: files written (path, bytes), unchanged, removed; bytes and seconds."""

    def __init__(self):
        self.written = []
        self.unchanged = 0
        self.removed = []
        self.payload_bytes = 0     # bytes of the files written
        self.wire_bytes = 0        # bytes sent to the board, REPL protocol (and for flash(), the agent) included
        self.seconds = 0.0
        self.node_id = None
        self.broker = None
        self.wifi = None           # the SSID the board joins, or None
        self.slot = None           # for flash(): the slot the board boots now
        self.code_store = None     # for flash(): "romfs" (code in the ROM partition) or "files"
        self.rom_bytes = 0         # bytes written into the ROM partition
        self.rom_note = None       # why a "romfs" board got its code as files, if it did

    @property
    def changed(self):
        return bool(self.written or self.removed)

    def summary(self):
        if not self.changed:
            return "board up to date: %d files unchanged (%.1f s)" % (self.unchanged, self.seconds)
        return ("wrote %d files (%.1f KB, %.1f KB over the link), %d unchanged, %d removed (%.1f s)"
                % (len(self.written), self.payload_bytes / 1024.0, self.wire_bytes / 1024.0,
                   self.unchanged, len(self.removed), self.seconds))


class Progress:
    """What sync() reports to; the CLI's progress bar implements it. This one is silent."""

    def start(self, files, total_bytes):
        pass

    def advance(self, path, nbytes):
        pass

    def file_done(self, path, size):
        pass

    def removed(self, path):
        pass

    def finish(self):
        pass


# -- the local tree ------------------------------------------------------------------------------

def local_tree(root):
    """[(path on the board, local file, size, sha256 hex)] for every file under root, by path."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            local = os.path.join(dirpath, name)
            rel = os.path.relpath(local, root).replace(os.sep, "/")
            with open(local, "rb") as f:
                data = f.read()
            entries.append((rel, local, len(data), hashlib.sha256(data).hexdigest()))
    entries.sort()
    return entries


def tree_digest(entries):
    """The digest flash_agent.ef_summary() computes on the board, of the local tree."""
    h = hashlib.sha256()
    for path, _local, _size, digest in entries:
        h.update(path.encode() + b"\n" + digest.encode() + b"\n")
    return h.hexdigest()


def image_roots(entries):
    """(top-level folders, top-level files) of a tree: what the image owns on a board."""
    dirs = sorted({path.split("/", 1)[0] for path, _l, _s, _d in entries if "/" in path})
    files = sorted(path for path, _l, _s, _d in entries if "/" not in path)
    return dirs, files


def mpy_requirements(entries):
    """{(mpy version, arch index, sub-version)} the tree's .mpy files need from a board."""
    needs = set()
    for path, local, _size, _digest in entries:
        if path.endswith(".mpy"):
            with open(local, "rb") as f:
                header = f.read(3)
            if len(header) == 3 and header[:1] == b"M":
                needs.add((header[1], header[2] >> 2, header[2] & 3))
    return needs


# -- the board side ------------------------------------------------------------------------------

def board_source(path):
    """A board-side module without comment lines and blank lines: bytes on a slow link are time."""
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return "\n".join(lines) + "\n"


# Bytes a bytes literal cannot carry as they are: the raw REPL's Ctrl-C and Ctrl-D, the line
# ends, the quote and the backslash, and NUL (MicroPython's lexer reads it as 0x01). The classic
# raw REPL also acts on Ctrl-A and Ctrl-B; raw-paste mode passes them through.
_LITERAL_SPECIAL = re.compile(b"[\x00\x03\x04\n\r'\\\\]")
_LITERAL_SPECIAL_CLASSIC = re.compile(b"[\x00-\x04\n\r'\\\\]")
_LITERAL_NAMED = {10: b"\\n", 13: b"\\r", 39: b"\\'", 92: b"\\\\"}
_ALL_BYTES = bytes(range(256))


def raw_deflate(data):
    """`data` as raw deflate with the small window the board decompresses it with."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -WBITS)
    return packer.compress(data) + packer.flush()


def _escape(match):
    byte = match.group()[0]
    return _LITERAL_NAMED.get(byte) or b"\\x%02x" % byte


def bytes_literal(data, classic=False):
    """A Python bytes literal of `data`, all bytes but the special ones as they are: ~1.08 bytes
    per byte of compressed (near-random) data, against base64's 1.33."""
    pattern = _LITERAL_SPECIAL_CLASSIC if classic else _LITERAL_SPECIAL
    return b"b'" + pattern.sub(_escape, data) + b"'"


class BoardAgent:
    """flash_agent.py's functions, called over a ReplLink at the raw REPL.

    Binary data goes as bytes literals with only the special bytes escaped when the board's
    lexer passes the other byte values through unchanged (MicroPython's does, CPython's would
    not): the first exec checks that on the board, and base64 is used where it does not hold.
    """

    def __init__(self, link):
        self.link = link
        self.deflate = False
        self.literals = False

    def load(self):
        self.link.exec(board_source(RELEASE_SOURCE).encode())
        # The raw REPL's mode is not known before this exec: escape for the classic one.
        code = board_source(BOOT_SOURCE).encode() + b"ef_boot(%s)\n" % bytes_literal(_ALL_BYTES, classic=True)
        words = self.link.exec(code).decode("utf-8", "replace").split()
        self.deflate = words[:1] == ["True"]
        self.literals = words[1:2] == [hashlib.sha256(_ALL_BYTES).hexdigest()]
        source = board_source(AGENT_SOURCE).encode()
        if self.deflate:
            self.link.exec(b"import deflate,io\nexec(deflate.DeflateIO(io.BytesIO(%s),deflate.RAW,%d).read())"
                           % (self._data(raw_deflate(source)), WBITS))
        else:
            self.link.exec(source)

    def _data(self, payload):
        """Code that evaluates to `payload` on this board: a literal, or base64 decoded there."""
        if self.literals:
            return bytes_literal(payload, classic=self.link.raw_paste is False)
        return b"binascii.a2b_base64(b'" + binascii.b2a_base64(payload, newline=False) + b"')"

    def probe(self):
        out = self.link.exec("ef_probe()").decode("utf-8", "replace").strip()
        info = board_info(out, self.link.port)
        self.deflate = info["deflate"]
        return info

    def summary(self, dirs, files):
        return self.link.exec("ef_summary(%r,%r)" % (dirs, files)).decode().strip()

    def listing(self, dirs, files):
        board = {}
        for line in self.link.exec("ef_listing(%r,%r)" % (dirs, files)).decode("utf-8", "replace").splitlines():
            if line.strip():
                path, _, digest = line.rstrip("\r").rpartition(" ")
                if not path or not re.fullmatch("[0-9a-f]{64}", digest):
                    raise FlashError("unexpected line in the board's file listing on %s: %r"
                                     % (self.link.port, line[-200:]), self.link.port)
                board[path] = digest
        return board

    def feed(self):
        """Feed the board's watchdog, if the node it interrupted armed one (ef_feed)."""
        self.link.exec("ef_feed()")

    def remove(self, paths, dirs, drop=()):
        self.link.exec("ef_remove(%r,%r,%r)" % (paths, dirs, list(drop)))

    def write_file(self, path, data, digest, progress):
        """Send one file in chunks; FlashError naming the file when the board cannot take it."""
        total = len(data)
        offset = 0
        while True:
            chunk = data[offset:offset + CHUNK_BYTES]
            last = offset + CHUNK_BYTES >= total
            payload, wbits = chunk, 0
            if self.deflate and chunk:
                packed = raw_deflate(chunk)
                if len(packed) < len(chunk):
                    payload, wbits = packed, WBITS
            code = b"ef_write(%s,%s,%s,%d)" % (repr(path if offset == 0 else None).encode(),
                                                 self._data(payload),
                                                 repr(digest if last else None).encode(), wbits)
            try:
                answer = self.link.exec(code, path=path).decode("utf-8", "replace").strip()
            except ReplExecError as exc:
                raise self._write_error(path, total, exc) from exc
            except (LinkLost, NoAnswer) as exc:
                raise FlashError("%s while writing %s (%d of %d bytes sent); flash again to finish: "
                                 "the files already written are kept and this one is sent again"
                                 % (exc, path, offset, total), self.link.port, path) from exc
            offset += len(chunk)
            progress.advance(path, len(chunk))
            if last:
                break
            if answer != "more":
                raise FlashError("unexpected answer from the board on %s while writing %s: %r"
                                 % (self.link.port, path, answer[-200:]), self.link.port, path)
        if answer.startswith("mismatch"):
            raise FlashError("%s failed its hash check after writing on the board on %s: sha256 %s "
                             "expected, the board has %s; nothing was replaced, flash again"
                             % (path, self.link.port, digest, answer.split()[-1]), self.link.port, path)
        if answer != "ok":
            raise FlashError("unexpected answer from the board on %s after writing %s: %r"
                             % (self.link.port, path, answer[-200:]), self.link.port, path)

    def _write_error(self, path, size, exc):
        port = self.link.port
        last = (exc.stderr.strip().splitlines() or ["(the board printed no error)"])[-1]
        if exc.errno == ENOSPC:
            return FlashError("the flash of the board on %s is full: %s (%d bytes) does not fit; "
                              "its partial copy was removed (flash fewer models with --model, or "
                              "free space on the board)" % (port, path, size), port, path)
        if "MemoryError" in exc.stderr:
            return FlashError("the board on %s ran out of RAM receiving %s: %s" % (port, path, last), port, path)
        return FlashError("writing %s on the board on %s failed: %s" % (path, port, last), port, path)


# What ef_probe (flash_agent.py) reports, field by field: (type, default). The board is not
# trusted to answer in shape: an old agent, a different firmware or a noisy line can answer
# anything, and a wrong type here would surface far away as a traceback.
BOARD_INFO = {"mpy": (int, 0), "deflate": (bool, False), "free": (int, None), "uid": (str, None),
              "node": (str, None), "broker": (dict, None), "wifi": (dict, None), "slot": (str, None), "machine": (str, None)}


def board_info(out, port):
    """The board's probe answer as a dict of BOARD_INFO's fields; FlashError naming the answer
    when its last line is not a JSON object or a field has the wrong type."""
    import json
    try:
        info = json.loads(out.splitlines()[-1])
    except (ValueError, IndexError):
        info = None
    if not isinstance(info, dict):
        raise FlashError("unexpected answer from the board on %s: %r" % (port, out[-200:]), port)
    checked = {}
    for field, (kind, default) in BOARD_INFO.items():
        value = info.get(field)
        if value is None:
            value = default
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise FlashError("the board on %s answered %s=%r, expected %s" % (port, field, value, kind.__name__), port)
        checked[field] = value
    return checked


def check_compatible(info, entries, port):
    """FlashError when the board cannot load the image's .mpy files (format or native arch)."""
    board_mpy = info.get("mpy") or 0
    version, sub, arch = board_mpy & 0xff, (board_mpy >> 8) & 3, board_mpy >> 10
    for need_version, need_arch, need_sub in sorted(mpy_requirements(entries)):
        if board_mpy and need_version != version:
            raise FlashError("the board on %s loads .mpy version %d, the image has version %d: "
                             "update the board's MicroPython (or mpy-cross)" % (port, version, need_version), port)
        if need_arch and (need_arch != arch or need_sub != sub):
            raise FlashError("the board on %s runs native code for %s, the image's is compiled for %s: "
                             "pick the right --board" % (port, _arch_name(arch), _arch_name(need_arch)), port)


def _arch_name(index):
    name = MPY_ARCHS[index] if 0 <= index < len(MPY_ARCHS) else None
    return name or "no native arch (%d)" % index


# -- syncing a tree ------------------------------------------------------------------------------

def write_order(path):
    """Sort key of the files a sync writes: files in folders first, a slot's MANIFEST after the
    rest of its slot (the boot selector takes a slot with one as complete), then the top-level
    files, the slot pointer just before main.py, which goes last: until they are replaced the
    board boots what it booted before."""
    top = "/" not in path
    last = ("slots.json", "main.py").index(path) + 1 if path in ("slots.json", "main.py") else 0
    return (top, path.endswith("/MANIFEST"), last, path)


def sync(agent, root, progress=None, remove_stale=True, claim=()):
    """Make the board's copy of the image in `root` equal to it (see the module docstring).

    claim: more top-level folders the image owns without holding anything in them (the slot it
    does not use, a flat image's code folders): whatever the board has there is removed, after
    everything else was written, and the folders with it."""
    progress = progress or Progress()
    started = time.monotonic()
    sent_before = agent.link.sent
    result = SyncResult()
    entries = local_tree(root)
    dirs, files = image_roots(entries)
    claim = sorted(set(claim) - set(dirs))
    dirs = sorted(dirs + claim)
    if agent.summary(dirs, files) == tree_digest(entries):
        result.unchanged = len(entries)
    else:
        board = agent.listing(dirs, files)
        local_paths = {path for path, _l, _s, _d in entries}
        stale = sorted(path for path in board if path not in local_paths) if remove_stale else []
        todo = [entry for entry in entries if board.get(entry[0]) != entry[3]]
        todo.sort(key=lambda entry: write_order(entry[0]))
        result.unchanged = len(entries) - len(todo)
        progress.start(len(todo), sum(entry[2] for entry in todo))
        for path, local, size, digest in todo:
            with open(local, "rb") as f:
                data = f.read()
            agent.write_file(path, data, digest, progress)
            result.written.append((path, size))
            result.payload_bytes += size
            progress.file_done(path, size)
        if stale:
            agent.remove(stale, dirs, claim)
            for path in stale:
                progress.removed(path)
        result.removed = stale
        progress.finish()
    result.wire_bytes = agent.link.sent - sent_before
    result.seconds = time.monotonic() - started
    return result


def open_session(port, baudrate=115200, timeout=10.0):
    """A ReplLink at the raw REPL with the agent loaded: (link, agent, board info)."""
    link = ReplLink(port, baudrate, timeout)
    try:
        link.enter_raw_repl()
        agent = BoardAgent(link)
        agent.load()
        info = agent.probe()
    except BaseException:
        link.close()
        raise
    return link, agent, info


def flash(port, board, node_id=None, broker=None, model_names=None, key_path=None, simulated=None,
          baudrate=115200, reset=True, progress=None, timeout=10.0, security=None, wifi=None, code_store=None):
    """Build `board`'s A/B image and sync it to the board on `port`; returns the SyncResult.

    broker: a broker URL or BrokerAddress ((host, port): plaintext), or None to keep the board's;
    the node gets its own broker login (and the fleet CA for mqtts://) from `security`
    (default: the fleet's security folder). wifi: config.json's "wifi" as wifi_settings() makes
    it, or None to keep the board's (if any). simulated: None means "a socket:// port is a simulated board"
    (HAL "sim", native code for the host's arch).

    Order: what can be checked here (board, models, broker) is checked first; the slot's code is
    compiled while the board is being reached; nothing is created on this host (signing key,
    node login) nor written to the board before the board answered and said it is a `board`.

    code_store: "romfs" puts the slot's code into the board's ROM partition (romdeploy.py) when
    it has one that fits, else the code goes as files and result.rom_note says why; "files";
    None: the profile's "code_store" (default "files").
    """
    profile = catalog.load(board)
    code_store = code_store or profile.get("code_store", CODE_STORES[0])
    if code_store not in CODE_STORES:
        raise ConfigError("code store %r is none of %s" % (code_store, ", ".join(CODE_STORES)))
    if profile["runtime"] != "micropython":
        raise ConfigError("board %s runs Linux, not MicroPython: provision it over SSH "
                          "(edgefleet provision USER@HOST --board %s)" % (board, board))
    model_names = choices.check_mcu_models(choices.check_models(model_names), board)
    if simulated is None:
        simulated = port.startswith("socket://")
    mpy_arch = image.SIM_MPY_ARCH if simulated else profile.get("mpy_arch")
    broker = nodelink.as_address(broker)
    if broker is not None:
        nodelink.check(profile, broker, security)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgefleet-image-") as tree:
        code = _Background(image.write_slot_set, tree, profile, model_names, mpy_arch, simulated)
        try:
            link, agent, info = open_session(port, baudrate, timeout)
        except BaseException:
            code.join(reraise=False)   # the board's error is the one to report
            raise
        try:
            code.join(while_waiting=agent.feed)   # the board's watchdog, if armed, waits with us
            check_board(info, profile, port)
            node_id = node_id or info.get("node") or _node_from_uid(board, info.get("uid"), port)
            broker = broker or _broker_from_board(info, port)
            wifi = wifi or _wifi_from_board(info)
            key = keys.load_or_create(key_path)
            node = nodelink.node_link(node_id, profile, broker, security=security)
            cfg = image.node_config(node_id, profile, broker.host, broker.port, simulated=simulated)
            cfg["broker"] = node.config
            cfg["fw"] = slots.read(tree)["ver"][image.FIRST_SLOT]
            if wifi:
                cfg["wifi"] = wifi
            image.write_config(tree, cfg)
            keys.install_public(tree, key)
            for name, data in node.files.items():
                with open(os.path.join(tree, name), "wb") as f:
                    f.write(data)
            check_compatible(info, local_tree(tree), port)
            rom, rom_note = None, None
            if code_store == "romfs":
                rom, rom_note = _rom_plan(agent, tree, mpy_arch)
            target = _target_slot(agent, tree, info.get("slot"))
            rom_bytes = 0
            if rom is not None:
                partition, rom_image = rom
                if simulated:
                    # The simulated board maps its partition as a copy on its heap
                    # (controller/sim/mcu_rom): the node leaves it out of its heap figures.
                    cfg["hal_options"]["rom_image_bytes"] = sum(partition.sizes)
                    image.write_config(tree, cfg)
                rom_bytes = romdeploy.deploy(agent, target, rom_image, partition, progress or Progress())
            claim = [slots.other(target)] + list(image.FLAT_DIRS)
            result = sync(agent, tree, progress, claim=claim)
            result.slot = target
            result.code_store = "romfs" if rom is not None else "files"
            result.rom_bytes = rom_bytes
            result.rom_note = rom_note
            if reset:
                agent.feed()   # the new boot gets the watchdog's whole timeout to start feeding it
                link.soft_reset()
        finally:
            link.close()
    result.wire_bytes = link.sent
    result.seconds = time.monotonic() - started
    result.node_id = node_id
    result.broker = broker
    result.wifi = wifi.get("ssid") if wifi else None
    return result


def _rom_plan(agent, tree, mpy_arch):
    """((RomPartition, image bytes), None) when the slot's code goes into the board's ROM
    partition (the tree's first slot then holds its ROM mark instead of its code), else
    (None, why it goes as files)."""
    partition, why = romdeploy.query(agent)
    room = min(partition.sizes[:2]) if partition is not None and partition.sizes else None
    rom_image = romdeploy.slot_image(os.path.join(tree, image.FIRST_SLOT), room)
    why = why or romdeploy.misfit(partition, len(rom_image))
    if why:
        return None, "code store romfs, but %s: the code goes as .mpy files" % why
    romdeploy.prepare_tree(tree, image.FIRST_SLOT, rom_image, mpy_arch)
    return (partition, rom_image), None


def wifi_settings(ssid, password, country=None):
    """config.json's "wifi" for a board that joins a Wi-Fi network (boards/wifi.py); ConfigError,
    never naming the password, when the network could not be joined with them: an SSID is 1-32
    bytes, a WPA2 passphrase 8-63 printable ASCII characters ("" for an open network), a
    country its ISO 3166 two-letter code."""
    size = len(ssid.encode("utf-8"))
    if not 1 <= size <= 32:
        raise ConfigError("--wifi %r: an SSID is 1 to 32 bytes, this one is %d" % (ssid, size))
    if password and not (8 <= len(password) <= 63 and all(" " <= c <= "~" for c in password)):
        raise ConfigError("the Wi-Fi password (%d characters) is no WPA2 passphrase: 8 to 63 printable ASCII "
                          "characters, or empty for an open network" % len(password))
    if country is not None:
        if not re.fullmatch("[A-Za-z]{2}", country):
            raise ConfigError("--wifi-country %r: a two-letter country code (ISO 3166), e.g. DE or US" % country)
        country = country.upper()
    return {"ssid": ssid, "password": password or "", "country": country}


def board_of_machine(machine):
    """The MCU profile whose "machine" the board's sys.implementation._machine ends with, or
    None for a board no profile names (a unix port, a board edgefleet has no profile for)."""
    for profile in catalog.all_profiles():
        if profile.get("machine") and machine and machine.endswith(profile["machine"]):
            return profile
    return None


def check_board(info, profile, port):
    """FlashError naming both boards when the board says it is another board edgefleet knows."""
    found = board_of_machine(info.get("machine"))
    if found is not None and found["name"] != profile["name"]:
        raise FlashError("the board on %s is a %s (it reports %r), not a %s: flash it with --board %s"
                         % (port, found["name"], info["machine"], profile["name"], found["name"]), port)


def _target_slot(agent, tree, active):
    """The slot the new code goes into. A board without slots gets the first; a slotted one
    keeps its active slot when that already holds exactly this code, else gets the code in the
    other slot, so the slot it boots is never half-written (the pointer switches after)."""
    if active not in slots.SLOTS:
        return image.FIRST_SLOT
    image.move_slot(tree, image.FIRST_SLOT, active)
    ours = [entry for entry in local_tree(tree) if entry[0].startswith(active + "/")]
    if agent.summary([active], []) == tree_digest(ours):
        return active
    image.move_slot(tree, active, slots.other(active))
    return slots.other(active)


class _Background:
    """A function run on a thread; join() re-raises what it raised."""

    def __init__(self, func, *args):
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(func,) + args, daemon=True)
        self._thread.start()

    def _run(self, func, *args):
        try:
            func(*args)
        except BaseException as exc:
            self._error = exc

    def join(self, reraise=True, while_waiting=None):
        """while_waiting: called about once a second until the function returned."""
        self._thread.join(None if while_waiting is None else 1.0)
        while self._thread.is_alive():
            while_waiting()
            self._thread.join(1.0)
        if self._error is not None and reraise:
            raise self._error


def _node_from_uid(board, uid, port):
    if not uid:
        raise ConfigError("the board on %s has no config.json and no machine.unique_id(): "
                          "name the node with --node" % port)
    return "%s-%s" % (board, uid[-6:])


def _wifi_from_board(info):
    """The board's Wi-Fi settings to keep, in wifi_settings()'s key order (the board's JSON has
    its own: the same settings would be new bytes, a config.json to send), or None."""
    wifi = info.get("wifi") or {}
    if not isinstance(wifi.get("ssid"), str):
        return None
    kept = {"ssid": wifi["ssid"], "password": wifi.get("password") or "", "country": wifi.get("country")}
    if wifi.get("join_ms"):
        kept["join_ms"] = wifi["join_ms"]   # set by hand on the board: boards/wifi.py's bound on a join
    return kept


def _broker_from_board(info, port):
    broker = info.get("broker") or {}
    if not isinstance(broker.get("host"), str) or not isinstance(broker.get("port"), int) or not broker["host"]:
        raise ConfigError("the board on %s has no config.json to keep the broker from: "
                          "pass --broker HOST:PORT" % port)
    return nodelink.address_of(broker)
