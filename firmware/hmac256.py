# HMAC-SHA256 (RFC 2104) on hashlib.sha256, which every MicroPython port has; MicroPython has
# no hmac module. Bundles are signed with it under the fleet key (docs/ota.md).
import hashlib

BLOCK = 64


def _pad(key, byte):
    if len(key) > BLOCK:
        key = hashlib.sha256(key).digest()
    out = bytearray(BLOCK)
    for i in range(len(key)):
        out[i] = key[i] ^ byte
    for i in range(len(key), BLOCK):
        out[i] = byte
    return bytes(out)


class Hmac:
    """Streaming HMAC-SHA256: update() any number of times, then digest() once."""

    def __init__(self, key, data=None):
        self._outer_key = _pad(key, 0x5C)
        self._inner = hashlib.sha256(_pad(key, 0x36))
        if data is not None:
            self._inner.update(data)

    def update(self, data):
        self._inner.update(data)

    def digest(self):
        outer = hashlib.sha256(self._outer_key)
        outer.update(self._inner.digest())
        return outer.digest()


def digest(key, data):
    return Hmac(key, data).digest()


def equal(a, b):
    """Compare two MACs in time independent of where they differ."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
