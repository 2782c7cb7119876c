# Update parts of the firmware (docs/ota.md) under CPython and the real MicroPython: the
# streaming bundle reader on real files, the slot pointer's decisions, and the OTA receive
# state machine driven chunk by chunk.
import binascii
import gc
import os

from firmware import bundle, protocol, slots
from firmware.update_errors import BadSignature, CorruptBundle, TruncatedBundle, WrongBoard
from firmware.ota import Receiver
from otakit import FILES, OTHER_KEY, OTHER_PUB, PUB, cleanup, make_bundle, scratch
from unit import raises


def _hex(data):
    return binascii.hexlify(data).decode()


def _unpack(data, step, key=PUB, board="rpi-pico-w"):
    gc.collect()
    root = scratch("unpack")
    reader = bundle.BundleReader(key, board, _runtime(), root + "/slot_b")
    try:
        for i in range(0, len(data), step):
            reader.feed(data[i:i + step])
        return root, reader.finish()
    except Exception:
        reader.close()
        cleanup(root)
        raise


def _runtime():
    import sys
    return "micropython" if sys.implementation.name == "micropython" else "cpython"


def test_bundle_unpacks_streaming_in_any_chunk_size():
    data = make_bundle(FILES)
    for step in (1, 7, 1536, len(data)):
        root, manifest = _unpack(data, step)
        try:
            assert manifest["version"] == "0.2.0"
            for path, body in FILES:
                with open(root + "/slot_b/" + path, "rb") as f:
                    assert f.read() == body, path
            assert bundle.verify_slot(root + "/slot_b")["version"] == "0.2.0"
        finally:
            cleanup(root)


def test_bundle_refuses_bad_ones_with_typed_errors():
    good = make_bundle(FILES)
    gc.collect()
    raises(BadSignature, _unpack, good, 512, OTHER_PUB)
    # A manifest byte flipped (here: a version) breaks the signature.
    i = good.find(b"0.2.0")
    raises(BadSignature, _unpack, good[:i] + b"9" + good[i + 1:], 512)
    raises(WrongBoard, _unpack, good, 512, PUB, "esp32")
    err = raises(CorruptBundle, _unpack, good[:-5] + b"XXXXX", 512)
    assert "boards/__init__.py" in str(err), err
    err = raises(TruncatedBundle, _unpack, good[:-100], 512)
    assert "boards/__init__.py" in str(err) or "model" in str(err), err
    raises(CorruptBundle, _unpack, good + b"!", 512)
    raises(CorruptBundle, _unpack, b"NOPE" + good[4:], 512)
    raises(CorruptBundle, _unpack, make_bundle([("../escape.py", b"x")]), 512)
    raises(CorruptBundle, _unpack, make_bundle([("/abs.py", b"x")]), 512)
    raises(WrongBoard, _unpack, make_bundle(FILES, runtime="java"), 512)


def test_verify_slot_catches_a_file_changed_on_flash():
    root, _ = _unpack(make_bundle(FILES), 1000)
    try:
        with open(root + "/slot_b/firmware/app.py", "ab") as f:
            f.write(b"#")
        raises(CorruptBundle, bundle.verify_slot, root + "/slot_b")
    finally:
        cleanup(root)


def test_slot_pointer_decisions():
    p = slots.initial("slot_a", "0.1.0", "i1")
    assert slots.on_boot(p) == (None, "slot_a")
    staged, target = slots.staging(p)
    assert target == "slot_b" and staged["prev"] is None
    t = slots.switch(staged, "slot_b", "0.2.0", "i2", 5000)
    assert t["active"] == "slot_b" and t["prev"] == "slot_a" and t["tentative"]
    for tries in (1, 2, 3):
        t, slot = slots.on_boot(t)
        assert slot == "slot_b" and t["tries"] == tries
    t, slot = slots.on_boot(t)
    assert slot == "slot_a" and not t["tentative"] and t["prev"] is None
    assert t["reverted"]["ver"] == "0.2.0" and t["reverted"]["id"] == "i2"
    ok = slots.confirm(slots.switch(staged, "slot_b", "0.2.0", "i2", 5000))
    assert slots.on_boot(ok) == (None, "slot_b")
    back = slots.rollback(ok)
    assert back["active"] == "slot_a" and back["prev"] == "slot_b" and not back["tentative"]
    assert slots.rollback(p) is None
    # Re-staging over the previous slot removes it as a rollback target.
    again, target = slots.staging(ok)
    assert target == "slot_a" and again["prev"] is None and "slot_a" not in again["ver"]


def test_select_reads_and_persists_the_pointer():
    root = scratch("select")
    try:
        assert slots.select(root) == (root + "/slot_a", slots.read(root))
        slots.write(root, slots.switch(slots.read(root), "slot_b", "0.2.0", "i2", 1000))
        slot, pointer = slots.select(root)
        assert slot == root + "/slot_b" and slots.read(root)["tries"] == 1
        with open(root + "/" + slots.POINTER, "w") as f:
            f.write("{not json")
        assert slots.select(root) is None   # and no slot holds a complete manifest
        os.mkdir(root + "/slot_b")
        with open(root + "/slot_b/MANIFEST", "w") as f:
            f.write("{}\n")
        with open(root + "/" + slots.POINTER, "w") as f:
            f.write("{not json")
        slot, pointer = slots.select(root)
        assert slot == root + "/slot_b" and slots.read(root)["active"] == "slot_b"
    finally:
        cleanup(root)


class Clock:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


def _chunks(rx, bundle_id, data, start=0, size=1536):
    reports = []
    off = start
    gc.collect()
    while off < len(data):
        piece = data[off:off + size]
        reports = rx.handle({"v": 1, "id": bundle_id, "op": "chunk", "off": off,
                             "data": binascii.b2a_base64(piece).decode().strip()})
        off += len(piece)
        if reports[0]["state"] != "receiving":
            break
    return reports


def test_receiver_installs_resumes_and_switches():
    root = scratch("rx")
    try:
        data = make_bundle(FILES)
        rx = Receiver(root, "rpi-pico-w", _runtime(), chunk=512)
        begin = {"v": 1, "id": "b2", "op": "begin", "size": len(data), "ver": "0.2.0", "window_ms": 4000}
        report = rx.handle(begin)[0]
        # The chunk size the board asks for rides on every `receiving` report.
        assert report["state"] == "receiving" and report["chunk"] == 512
        assert protocol.decode("ota_state", protocol.encode("ota_state", dict(report, v=1, node="n", boot=1)))
        _chunks(rx, "b2", data[:1000])
        # A disconnect and a repeated begin resume from where the node is, not from zero.
        report = rx.handle(begin)[0]
        assert report["state"] == "receiving" and report["off"] == 1000
        # A chunk from the wrong offset is answered with the offset the node wants.
        report = rx.handle({"v": 1, "id": "b2", "op": "chunk", "off": 100, "data": "AAAA"})[0]
        assert report["off"] == 1000
        report = _chunks(rx, "b2", data, start=1000)[0]
        assert report["state"] == "switching" and report["ver"] == "0.2.0" and rx.switched
        pointer = slots.read(root)
        assert pointer["active"] == "slot_b" and pointer["prev"] == "slot_a" and pointer["tentative"]
        assert pointer["window_ms"] == 4000 and pointer["ids"]["slot_b"] == "b2"
    finally:
        cleanup(root)


def test_receiver_rejects_and_keeps_the_running_slot():
    root = scratch("reject")
    try:
        rx = Receiver(root, "rpi-pico-w", _runtime())
        for why in ("signature", "board"):
            # One bad bundle in RAM at a time, as a board receives them.
            bad = None
            bad = make_bundle(FILES, key=OTHER_KEY) if why == "signature" else make_bundle(FILES, board="esp32")
            rx.handle({"v": 1, "id": why, "op": "begin", "size": len(bad)})
            report = _chunks(rx, why, bad)[0]
            assert report["state"] == "rejected" and why in report["err"], report
            pointer = slots.read(root)
            assert pointer["active"] == "slot_a" and not pointer["tentative"]
        # After a rejection further chunks of that stream ask for a begin instead of writing.
        assert rx.handle({"v": 1, "id": "board", "op": "chunk", "off": 0, "data": ""})[0]["state"] == "idle"
    finally:
        cleanup(root)


def test_receiver_abandons_a_stream_that_stops():
    root = scratch("abandon")
    try:
        clock = Clock()
        rx = Receiver(root, "rpi-pico-w", _runtime(), now_ms=clock, abandon_ms=1000)
        data = make_bundle(FILES)
        rx.handle({"v": 1, "id": "b3", "op": "begin", "size": len(data)})
        _chunks(rx, "b3", data[:800])
        clock.t = 500
        assert not rx.expired()
        clock.t = 1600
        assert rx.expired()
        rx.drop()
        assert slots.read(root)["active"] == "slot_a"
    finally:
        cleanup(root)


def test_receiver_without_the_public_key_refuses_updates():
    root = scratch("nokey")
    try:
        rx = Receiver(root, "rpi-pico-w", _runtime())
        os.remove(root + "/sign.pub")
        report = rx.handle({"v": 1, "id": "b4", "op": "begin", "size": 2000})[0]
        assert report["state"] == "rejected" and "public key" in report["err"]
        assert slots.read(root)["active"] == "slot_a"
    finally:
        cleanup(root)

