#!/usr/bin/env python3
"""Bundle signature checks on a microcontroller's budget: the firmware's pure-Python Ed25519
verify (firmware/ed25519.py, with its own SHA-512) under the real MicroPython at the ESP32
profile's heap, on a ~120 KB bundle signed here with `cryptography`.

Measured, each in a fresh `micropython -X heapsize=HEAP` loading the firmware as .mpy (as a
board does):
- ed25519_verify_s_mcu: the signature check alone (import of the verifier included, as on a
  board, where it is imported for the check and dropped after);
- stream_verify_unpack_s_mcu: the whole bundle streamed through firmware/bundle.py's reader in
  1536-byte chunks (manifest sha256, signature, every file written and hashed) into a slot;
- ed25519_verify_heap_bytes: the extra heap the check needs, bisected: the smallest heap at
  which importing the reader and verifying succeeds, less the smallest at which importing the
  reader alone does (so it counts the verifier's code, constants and its peak working set).

The unix port runs on this host's x86_64 CPU: times are for it, not for a 240 MHz Xtensa; the
heap figures are the same interpreter's allocations a board makes.

Last line: {"ed25519_verify_s_mcu", "ed25519_verify_heap_bytes", ...}
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from edgefleet.boards import catalog
from edgefleet.controller.deploy import bundle
from edgefleet.controller.install import image, keys
from edgefleet.firmware import bundle as wire

BOARD = "rpi-pico-w"   # whose slot makes the ~120 KB bundle (the rollout bench's)
HEAP_BOARD = "esp32"   # whose heap the check must fit
STEP = 512

PROBE = r"""
import gc, sys, time
mode, path, pub_hex = sys.argv[1], sys.argv[2], sys.argv[3]
import binascii
gc.collect()
from firmware import bundle
gc.collect()
if mode == "import":
    print("OK", gc.mem_free())
    raise SystemExit
pub = binascii.unhexlify(pub_hex)
if mode == "verify":
    import hashlib
    with open(path, "rb") as f:
        head = f.read(8)
        n = bundle.manifest_length(head)
        h = hashlib.sha256(head)
        buf = bytearray(512)
        left = n
        while left:
            k = f.readinto(memoryview(buf)[:min(512, left)])
            h.update(memoryview(buf)[:k])
            left -= k
        sig = f.read(64)
    msg = bundle.signed_message(h.digest())
    buf = h = None
    gc.collect()
    t = time.ticks_us()
    ok = bundle.verify_signature(pub, sig, msg)
    dt = time.ticks_diff(time.ticks_us(), t)
    gc.collect()
    print("OK" if ok else "BAD", dt, gc.mem_free())
else:   # stream
    import os
    dest = mode
    reader = bundle.BundleReader(pub, sys.argv[4], "micropython", dest, manifest_part=dest + "/../m.part")
    chunk = bytearray(1536)
    t = time.ticks_us()
    with open(path, "rb") as f:
        while True:
            k = f.readinto(chunk)
            if not k:
                break
            reader.feed(memoryview(chunk)[:k])
    reader.finish()
    dt = time.ticks_diff(time.ticks_us(), t)
    print("OK", dt, gc.mem_free())
"""


def micropython():
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    return here if os.path.exists(here) else "micropython"


def run(work, heap, *args):
    env = dict(os.environ, MICROPYPATH=os.path.join(work, "img") + ":.frozen")
    proc = subprocess.run([micropython(), "-X", "heapsize=%d" % heap, os.path.join(work, "probe.py")] + list(args),
                          capture_output=True, text=True, env=env, timeout=300)
    words = proc.stdout.split()
    return (words[1:] if proc.returncode == 0 and words[:1] == ["OK"] else None), proc


def smallest_heap(work, args, low=8 * 1024, high=256 * 1024):
    if run(work, high, *args)[0] is None:
        raise SystemExit("fails even at %d bytes: %s" % (high, run(work, high, *args)[1].stderr[-2000:]))
    while high - low > STEP:
        mid = (low + high) // 2
        if run(work, mid, *args)[0] is not None:
            high = mid
        else:
            low = mid
    return high


def measure(repeats=3):
    heap = catalog.load(HEAP_BOARD)["heap_bytes"]
    key = os.urandom(keys.KEY_BYTES)
    pub_hex = keys.public(key).hex()
    data = bundle.build(BOARD, "0.2.0", key, models=["digits_dense"], mpy_arch="x64", seq=1)
    with tempfile.TemporaryDirectory(prefix="edgefleet-signing-") as work:
        image.write_mpy_tree(os.path.join(work, "img"),
                             [(src, rel) for src, rel in image.mcu_code_files() if rel != "main.py"])
        with open(os.path.join(work, "probe.py"), "w") as f:
            f.write(PROBE)
        path = os.path.join(work, "bundle.efb")
        with open(path, "wb") as f:
            f.write(data)
        verify_us = []
        for _ in range(repeats):
            out, proc = run(work, heap, "verify", path, pub_hex)
            if out is None:
                raise SystemExit("verify failed at %d bytes:\n%s%s" % (heap, proc.stdout, proc.stderr))
            verify_us.append(int(out[0]))
        bad = pub_hex[:-2] + ("00" if pub_hex[-2:] != "00" else "01")
        refused = run(work, heap, "verify", path, bad)[1].stdout.startswith("BAD")
        stream_us = []
        for i in range(repeats):
            dest = os.path.join(work, "slot%d" % i)
            os.mkdir(dest)
            out, proc = run(work, heap, dest, path, pub_hex, BOARD)
            if out is None:
                raise SystemExit("streaming the bundle failed at %d bytes:\n%s%s" % (heap, proc.stdout, proc.stderr))
            stream_us.append(int(out[0]))
            wire.verify_slot(dest)
        with_verify = smallest_heap(work, ["verify", path, pub_hex])
        import_only = smallest_heap(work, ["import", path, pub_hex])
    return {
        "ed25519_verify_s_mcu": round(min(verify_us) / 1e6, 4),
        "ed25519_verify_heap_bytes": with_verify - import_only,
        "stream_verify_unpack_s_mcu": round(min(stream_us) / 1e6, 3),
        "bundle_bytes": len(data),
        "heap_bytes": heap,
        "heap_board": HEAP_BOARD,
        "min_heap_reader_and_verify": with_verify,
        "min_heap_reader_only": import_only,
        "wrong_key_refused": refused,
        "runtime": "MicroPython unix port (x86_64), firmware as .mpy",
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(json.dumps(measure(args.repeats)))


if __name__ == "__main__":
    main()
