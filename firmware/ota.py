# The node's side of an over-the-air update (docs/ota.md): a bundle arrives as in-order chunks
# on the `ota` topic, is verified and unpacked into the inactive slot as it streams, re-read and
# hash-checked, and only then does one atomic pointer write make it the (tentative) active slot.
# The node reports progress on `ota_state`; the controller resumes from the last offset it saw.
# Imported only when the first `ota` message arrives: a board that is not updating pays nothing.
import asyncio
import binascii
import json

from . import bundle, flashfile, slots
from .health import KEY_FILE, report
from .clock import ticks_diff, ticks_ms
from .errors import FirmwareError
from .update_errors import BundleError, Downgrade

# A stream with no chunk for this long is dropped; its partial slot stays unused.
ABANDON_MS = 30000
# The lowest bundle sequence number this node accepts, outside both slots: {"seq", "sig"}.
FLOOR_FILE = "ota-floor.json"
# The incoming manifest, outside both slots until the bundle is complete.
MANIFEST_PART = "ota-manifest.part"
# A bundle whose code is a ROM image for the board's ROM partition (firmware/romslot.py).
ROM_CODE = "romfs"


def load_key(root):
    try:
        with open(slots.slot_dir(root, KEY_FILE)) as f:
            text = f.read().strip()
        key = binascii.unhexlify(text)
    except (OSError, ValueError):
        raise BundleError("no usable bundle public key (%s) on this board: it cannot check bundles" % KEY_FILE)
    if len(key) != bundle.PUBLIC_KEY_BYTES:
        raise BundleError("bundle public key holds %d bytes, expected %d" % (len(key), bundle.PUBLIC_KEY_BYTES))
    return key


def read_floor(root):
    """{"seq": lowest acceptable sequence number, "sig": the bundle that set it}; seq 0 when unset."""
    try:
        f = open(slots.slot_dir(root, FLOOR_FILE))
    except OSError:
        return {"seq": 0, "sig": ""}
    try:
        with f:
            floor = json.loads(f.read())
        if isinstance(floor.get("seq"), int) and isinstance(floor.get("sig"), str):
            return floor
    except (ValueError, AttributeError):
        pass
    # Only ever replaced by rename: a damaged floor is damaged flash. Refuse rather than reopen downgrades.
    raise BundleError("%s is unreadable: this node cannot tell a downgrade from an update" % FLOOR_FILE)


def check_seq(floor, seq, sig):
    """Raise Downgrade unless a verified bundle's seq is above the floor, or equal to it from the
    very bundle that set it (a stream that restarts after a reboot)."""
    if seq < floor["seq"] or (seq == floor["seq"] and sig != floor["sig"]):
        raise Downgrade("bundle sequence %d refused: this node took %d already and accepts only higher "
                        "(a downgrade or a replay)" % (seq, floor["seq"]))


def raise_floor(root, seq, sig):
    flashfile.write(slots.slot_dir(root, FLOOR_FILE), {"seq": seq, "sig": sig})


class Receiver:
    """The receive state machine, free of MQTT: handle() takes a validated `ota` message and
    returns the `ota_state` reports to send; done() tells the caller to reboot."""

    def __init__(self, root, board, runtime, now_ms=ticks_ms, abandon_ms=ABANDON_MS, mpy=None, chunk=None):
        """runtime: the node's ("micropython" or "cpython"); mpy: the .mpy version it loads
        (its HAL's mpy_version()), None where it loads none; chunk: the most bundle bytes a
        chunk may carry, which `receiving` reports ask for (None: the controller's size)."""
        self.root = root
        self.chunk_bytes = chunk
        self.board = board
        self.runtime = runtime
        self.mpy = mpy
        self.now_ms = now_ms
        self.abandon_ms = abandon_ms
        self.id = None
        self.size = 0
        self.off = 0
        self.ver = None
        self.window_ms = slots.DEFAULT_WINDOW_MS
        self.reader = None
        self.target = None
        self.last_ms = 0
        self.switched = False

    def state(self, state, bundle_id=None, err=None, ver=None):
        msg = {"id": bundle_id if bundle_id is not None else (self.id or ""), "state": state, "off": self.off}
        if err is not None:
            msg["err"] = err
        if ver is not None:
            msg["ver"] = ver
        if self.chunk_bytes and state == "receiving":
            msg["chunk"] = self.chunk_bytes
        return msg

    def handle(self, msg):
        op = msg["op"]
        try:
            if op == "begin":
                return self.begin(msg)
            if op == "chunk":
                return self.chunk(msg)
            if op == "abort":
                if msg["id"] == self.id:
                    self.drop()
                    return [self.state("abandoned", msg["id"], "aborted by the controller")]
                return []
            if op == "rollback":
                return self.rollback(msg)
        except BundleError as e:
            bundle_id = self.id or msg["id"]
            self.drop()
            return [self.state("rejected", bundle_id, str(e))]
        return [self.state("rejected", msg["id"], "unknown ota op %r" % op)]

    def begin(self, msg):
        if self.switched:
            return [self.state("switching", msg["id"])]
        if msg["id"] == self.id:
            return [self.state("receiving")]   # a resume: carry on from self.off
        pointer = slots.read(self.root)
        if pointer is None:
            raise BundleError("this node's flash has no A/B slots (%s); it cannot take updates" % slots.POINTER)
        if pointer.get("tentative"):
            # Writing the other slot now would destroy the version to fall back to.
            raise BundleError("version %s is still on probation; update again once it is confirmed or reverted"
                              % pointer["ver"].get(pointer["active"]))
        if pointer.get("ids", {}).get(pointer["active"]) == msg["id"]:
            return [self.state("current", msg["id"], ver=pointer["ver"].get(pointer["active"]))]
        size = msg.get("size")
        if not isinstance(size, int) or size < 40:
            raise BundleError("begin: bundle size %r is not a bundle's" % (size,))
        key = load_key(self.root)
        self.drop()
        import gc
        gc.collect()
        self.target = slots.slot_dir(self.root, slots.other(pointer["active"]))
        # Nothing on flash changes until the manifest's signature and board check out: a forged
        # or foreign bundle leaves both slots - and the way back - as they were.
        self.reader = bundle.BundleReader(key, self.board, self.runtime, self.target, self.mpy,
                                          slots.slot_dir(self.root, MANIFEST_PART), self._clear_target)
        self.id, self.size, self.off = msg["id"], size, 0
        self.ver = msg.get("ver")
        self.window_ms = msg.get("window_ms") or slots.DEFAULT_WINDOW_MS
        self.last_ms = self.now_ms()
        return [self.state("receiving")]

    def _clear_target(self):
        # The signature checked out: refuse a downgrade or replay before anything changes, then
        # raise the floor (atomically, outside the slots) before the inactive slot is touched.
        if self.reader.header.get("code") == ROM_CODE:
            from . import romslot
            romslot.check(self.target.rsplit("/", 1)[-1])
        seq = self.reader.header["seq"]
        sig = binascii.hexlify(self.reader.signature[:16]).decode()
        check_seq(read_floor(self.root), seq, sig)
        raise_floor(self.root, seq, sig)
        pointer, target = slots.staging(slots.read(self.root))
        slots.write(self.root, pointer)
        slots.remove_tree(self.target)
        bundle._makedirs(self.target + "/x")

    def chunk(self, msg):
        if msg["id"] != self.id or self.reader is None:
            # Not the stream in progress (e.g. the node rebooted mid-stream): ask for a begin.
            return [self.state("idle", msg["id"])]
        off = msg.get("off")
        if off != self.off:
            return [self.state("receiving")]   # out of order: the controller rewinds to self.off
        data = binascii.a2b_base64(msg.get("data") or "")
        if self.off + len(data) > self.size:
            raise BundleError("chunk at %d runs past the announced size %d" % (self.off, self.size))
        try:
            self.reader.feed(data)
        except Exception:
            # A reader that failed part-way (also for lack of heap) is in no state to go on:
            # the stream is dropped and starts over with the controller's next begin.
            self.drop()
            raise
        self.off += len(data)
        self.last_ms = self.now_ms()
        if self.off < self.size:
            return [self.state("receiving")]
        manifest = self.reader.finish()
        self.reader = None
        bundle.verify_slot(self.target)
        target = self.target.rsplit("/", 1)[-1]
        if manifest.get("code") == ROM_CODE:
            # The code came as a ROM image: into the slot's ROM segment, then the slot's mark.
            from . import romslot, release_module
            size, digest = bundle.slot_entry(self.target, romslot.ROM_IMAGE)
            romslot.install(self.target, target, size, digest)
            release_module(romslot)
        pointer = slots.read(self.root)
        if pointer is None:
            raise BundleError("slot pointer vanished during the update")
        slots.write(self.root, slots.switch(pointer, target, manifest["version"], self.id, self.window_ms))
        self.switched = True
        return [self.state("switching", ver=manifest["version"])]

    def rollback(self, msg):
        pointer = slots.read(self.root)
        new = slots.rollback(pointer) if pointer is not None else None
        if new is None:
            raise BundleError("no previous slot to roll back to")
        slots.write(self.root, new)
        self.switched = True
        return [self.state("rolledback", msg["id"], ver=new["ver"].get(new["active"]))]

    def expired(self):
        return self.reader is not None and ticks_diff(self.now_ms(), self.last_ms) > self.abandon_ms

    def drop(self):
        """Forget the stream in progress; its partial slot stays on flash, referenced by nothing."""
        if self.reader is not None:
            self.reader.close()
        self.reader = None
        self.id = None
        self.off = 0


class OtaAgent:
    """Connects a Receiver to the node: reports, abandon timer, reboot after the switch."""

    def __init__(self, node, root="."):
        self.node = node
        # A board short of heap asks for small chunks (profile "ota": {"chunk_bytes"}): each
        # chunk's message, its base64 text and its bytes must each find a free block of their
        # size, and in a heap fragmented by a node's life 2 KB blocks are the first to go.
        self.receiver = Receiver(root, node.cfg["board"], node.runtime,
                                 abandon_ms=node.cfg.get("ota_abandon_ms", ABANDON_MS), mpy=node.hal.mpy_version(),
                                 chunk=node.profile.get("ota", {}).get("chunk_bytes"))
        self._watch = None

    def handle(self, msg):
        try:
            reports = self.receiver.handle(msg)
        except FirmwareError as e:   # flash trouble: refuse the update, keep running
            self.receiver.drop()
            reports = [self.receiver.state("rejected", msg["id"], "%s: %s" % (type(e).__name__, e))]
        except OSError as e:
            self.receiver.drop()
            reports = [self.receiver.state("rejected", msg["id"], "flash error: %s" % e)]
        except MemoryError:
            self.receiver.drop()
            import gc
            gc.collect()
            reports = [self.receiver.state("rejected", msg["id"], "out of heap while unpacking")]
        for report in reports:
            self.report(report)
        if self.receiver.switched:
            asyncio.create_task(self.node.reboot_soon("update: slot switched (%s)" % msg["id"]))
        elif self.receiver.reader is not None and self._watch is None:
            self._watch = asyncio.create_task(self.watch())

    def report(self, state):
        if state["state"] == "rejected":
            self.node.event("warn", "ota_rejected", "update %s refused: %s" % (state["id"], state.get("err")),
                            {"id": state["id"]})
        report(self.node, state)

    async def watch(self):
        while self.receiver.reader is not None:
            await asyncio.sleep(1)
            if self.receiver.expired():
                bundle_id = self.receiver.id
                self.receiver.drop()
                self.report(self.receiver.state("abandoned", bundle_id, "no chunk for %d ms" % self.receiver.abandon_ms))
        self._watch = None
