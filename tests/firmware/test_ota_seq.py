# No downgrades (docs/ota.md): the sequence floor a node keeps outside its slots, under CPython
# and the real MicroPython. Apart from test_ota_parts so each fits an MCU heap.
import binascii
import gc

from firmware import slots
from firmware.ota import FLOOR_FILE, Receiver, read_floor
from otakit import FILES, OTHER_KEY, cleanup, make_bundle, scratch


def _runtime():
    import sys
    return "micropython" if sys.implementation.name == "micropython" else "cpython"


def _install(root, bundle_id, data, upto=None):
    """Stream `data` (its first `upto` bytes) into a fresh Receiver; the last report."""
    gc.collect()
    rx = Receiver(root, "rpi-pico-w", _runtime())
    report = rx.handle({"v": 1, "id": bundle_id, "op": "begin", "size": len(data)})[0]
    off = 0
    end = len(data) if upto is None else upto
    while report["state"] == "receiving" and off < end:
        piece = data[off:min(off + 1024, end)]
        report = rx.handle({"v": 1, "id": bundle_id, "op": "chunk", "off": off,
                            "data": binascii.b2a_base64(piece).decode().strip()})[0]
        off += len(piece)
    return report


def _confirm(root):
    slots.write(root, slots.confirm(slots.read(root)))


def test_receiver_refuses_downgrades_and_replays():
    root = scratch("seq")
    try:
        assert read_floor(root)["seq"] == 0
        assert _install(root, "s5", make_bundle(FILES, version="0.5.0", seq=5))["state"] == "switching"
        assert read_floor(root)["seq"] == 5
        _confirm(root)
        before = slots.read(root)
        # Lower, and equal from another bundle: rejected as downgrades, the pointer unchanged.
        for bundle_id, seq in (("s4", 4), ("s5b", 5)):
            report = _install(root, bundle_id, make_bundle(FILES, version="0.4.0", seq=seq))
            assert report["state"] == "rejected" and "sequence %d" % seq in report["err"], report
            assert slots.read(root) == before and read_floor(root)["seq"] == 5
        # A forged bundle with a high seq does not move the floor: it fails its signature first.
        report = _install(root, "s9", make_bundle(FILES, key=OTHER_KEY, seq=9))
        assert report["state"] == "rejected" and "signature" in report["err"]
        assert read_floor(root)["seq"] == 5 and slots.read(root) == before
        assert _install(root, "s6", make_bundle(FILES, version="0.6.0", seq=6))["state"] == "switching"
        assert slots.read(root)["ver"][slots.read(root)["active"]] == "0.6.0"
    finally:
        cleanup(root)


def test_receiver_resumes_the_bundle_that_raised_the_floor():
    root = scratch("seqresume")
    try:
        data = make_bundle(FILES, seq=7)
        assert _install(root, "s7", data, upto=len(data) - 200)["state"] == "receiving"
        assert read_floor(root)["seq"] == 7
        # The node reboots mid-stream (its stream state is lost) and the same bundle starts over.
        assert _install(root, "s7", data)["state"] == "switching"
        # A floor file that cannot be read refuses updates instead of allowing downgrades.
        _confirm(root)
        with open(root + "/" + FLOOR_FILE, "w") as f:
            f.write("{torn")
        report = _install(root, "s8", make_bundle(FILES, seq=8))
        assert report["state"] == "rejected" and FLOOR_FILE in report["err"]
    finally:
        cleanup(root)
