# Builds small signed bundles and scratch "flash" folders for the OTA firmware tests, with the
# firmware's own HMAC (these tests run under MicroPython, which has no hmac module).
import binascii
import hashlib
import json
import os
import random

from firmware import bundle, hmac256, slots

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def sha(data):
    return binascii.hexlify(hashlib.sha256(data).digest()).decode()


def make_bundle(files, key=KEY, board="rpi-pico-w", runtime=None, version="0.2.0", manifest_extra=None):
    """files: [(path, bytes)]. Returns the bundle's bytes, laid out as firmware/bundle.py reads."""
    import sys
    runtime = runtime or ("micropython" if sys.implementation.name == "micropython" else "cpython")
    header = {"format": 1, "version": version, "board": board, "runtime": runtime, "mpy": None, "files": len(files)}
    if manifest_extra:
        header.update(manifest_extra)
    raw = json.dumps(header) + "\n"
    for p, d in files:
        raw += "%d %s %s\n" % (len(d), sha(d), p)
    raw = raw.encode()
    head = bundle.MAGIC + len(raw).to_bytes(4, "big")
    out = bytearray(head + raw)
    out.extend(hmac256.digest(key, head + raw))
    for _, data in files:
        out.extend(data)
    return bytes(out)


FILES = [("firmware/app.py", b"VERSION = 2\n" * 20), ("models/m/model.tflite", bytes(range(256)) * 4),
         ("models/m/empty.bin", b""), ("boards/__init__.py", b"# hal\n")]


def scratch(tag):
    """A fresh folder playing a board's flash: slot_a holds version 0.1.0, key installed."""
    root = "/tmp/ef-ota-%s-%d" % (tag, random.getrandbits(30))
    os.mkdir(root)
    os.mkdir(root + "/slot_a")
    with open(root + "/slot_a/old.txt", "w") as f:
        f.write("v1")
    slots.write(root, slots.initial("slot_a", "0.1.0", "flashed"))
    with open(root + "/fleet.key", "w") as f:
        f.write(binascii.hexlify(KEY).decode() + "\n")
    return root


def cleanup(root):
    slots.remove_tree(root)
