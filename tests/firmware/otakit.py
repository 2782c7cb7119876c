# Builds small signed bundles and scratch "flash" folders for the OTA firmware tests, signed
# with the pure-Python Ed25519 signer beside the tests (they run under MicroPython too).
import binascii
import hashlib
import json
import os
import random

from firmware import bundle, slots

KEY = bytes(range(32))          # the controller's private signing key (its seed)
OTHER_KEY = bytes(range(1, 33))  # somebody else's
# What a board holds: their public keys (test_ed25519 checks them against the signer).
PUB = binascii.unhexlify("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
OTHER_PUB = binascii.unhexlify("79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664")


def sign(key, message):
    """The test signer, imported for the call and dropped after: these tests run at MCU heaps."""
    import ed25519_sign
    from firmware import ed25519, release_module
    try:
        return ed25519_sign.sign(key, message)
    finally:
        release_module(ed25519_sign)
        release_module(ed25519)


def sha(data):
    return binascii.hexlify(hashlib.sha256(data).digest()).decode()


def make_bundle(files, key=KEY, board="rpi-pico-w", runtime=None, version="0.2.0", manifest_extra=None, seq=2):
    """files: [(path, bytes)]. Returns the bundle's bytes, laid out as firmware/bundle.py reads."""
    import sys
    runtime = runtime or ("micropython" if sys.implementation.name == "micropython" else "cpython")
    header = {"format": bundle.FORMAT, "version": version, "seq": seq, "board": board, "runtime": runtime, "mpy": None, "files": len(files)}
    if manifest_extra:
        header.update(manifest_extra)
    raw = json.dumps(header) + "\n"
    for p, d in files:
        raw += "%d %s %s\n" % (len(d), sha(d), p)
    raw = raw.encode()
    head = bundle.MAGIC + len(raw).to_bytes(4, "big")
    out = bytearray(head + raw)
    out.extend(sign(key, bundle.signed_message(hashlib.sha256(head + raw).digest())))
    for _, data in files:
        out.extend(data)
    return bytes(out)


FILES = [("firmware/app.py", b"VERSION = 2\n" * 20), ("models/m/model.tflite", bytes(range(256)) * 4),
         ("models/m/empty.bin", b""), ("boards/__init__.py", b"# hal\n")]


def scratch(tag):
    """A fresh folder playing a board's flash: slot_a holds version 0.1.0, public key installed."""
    root = "/tmp/ef-ota-%s-%d" % (tag, random.getrandbits(30))
    os.mkdir(root)
    os.mkdir(root + "/slot_a")
    with open(root + "/slot_a/old.txt", "w") as f:
        f.write("v1")
    slots.write(root, slots.initial("slot_a", "0.1.0", "flashed"))
    with open(root + "/sign.pub", "w") as f:
        f.write(binascii.hexlify(PUB).decode() + "\n")
    return root


def cleanup(root):
    slots.remove_tree(root)
