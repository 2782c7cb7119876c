# Ed25519 signature verification (RFC 8032, section 5.1.7) in the MicroPython/CPython common
# subset: bundles are signed on the controller host with a key no board holds, and a board
# checks them with the public key alone (docs/ota.md, docs/security.md).
#
# Written from the RFC's math with arbitrary-precision ints, which every MicroPython port has.
# No MicroPython port's hashlib has sha512 (upstream extmod/modhashlib.c offers sha256, sha1
# and md5), so SHA-512 is here too, used only where hashlib lacks it. A board hashes one or two
# 128-byte blocks with it: what is signed is a 36-byte digest of the manifest (firmware/bundle.py),
# not the bundle. Verification is not constant-time; it handles only public data.
import hashlib

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
_M64 = 0xFFFFFFFFFFFFFFFF


def _pow(b, e, m):
    """b ** e mod m; builtin 3-argument pow where the port has it (MICROPY_PY_BUILTINS_POW3)."""
    try:
        return pow(b, e, m)
    except (TypeError, NotImplementedError):
        out = 1
        b %= m
        while e:
            if e & 1:
                out = out * b % m
            b = b * b % m
            e >>= 1
        return out


_D = (-121665 * _pow(121666, P - 2, P)) % P
_SQRT_M1 = _pow(2, (P - 1) // 4, P)


def _le(data):
    """Little-endian bytes -> int (int.from_bytes is in both runtimes; kept in one place)."""
    return int.from_bytes(bytes(data), "little")


# -- SHA-512 (FIPS 180-4), for interpreters whose hashlib lacks it ---------------------------

# FIPS 180-4 constants: the first 64 bits of the fractional parts of the square roots of the
# first 8 primes (the initial state) and of the cube roots of the first 80 primes (the round
# constants), as bytes literals: 80 ints would hold 4.7 KB of an MCU's heap (and hex text
# another 1.4 KB while unpacked), these 704 bytes.
_H0 = (
    b"\x6a\x09\xe6\x67\xf3\xbc\xc9\x08\xbb\x67\xae\x85\x84\xca\xa7\x3b"
    b"\x3c\x6e\xf3\x72\xfe\x94\xf8\x2b\xa5\x4f\xf5\x3a\x5f\x1d\x36\xf1"
    b"\x51\x0e\x52\x7f\xad\xe6\x82\xd1\x9b\x05\x68\x8c\x2b\x3e\x6c\x1f"
    b"\x1f\x83\xd9\xab\xfb\x41\xbd\x6b\x5b\xe0\xcd\x19\x13\x7e\x21\x79")
_K = (
    b"\x42\x8a\x2f\x98\xd7\x28\xae\x22\x71\x37\x44\x91\x23\xef\x65\xcd"
    b"\xb5\xc0\xfb\xcf\xec\x4d\x3b\x2f\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc"
    b"\x39\x56\xc2\x5b\xf3\x48\xb5\x38\x59\xf1\x11\xf1\xb6\x05\xd0\x19"
    b"\x92\x3f\x82\xa4\xaf\x19\x4f\x9b\xab\x1c\x5e\xd5\xda\x6d\x81\x18"
    b"\xd8\x07\xaa\x98\xa3\x03\x02\x42\x12\x83\x5b\x01\x45\x70\x6f\xbe"
    b"\x24\x31\x85\xbe\x4e\xe4\xb2\x8c\x55\x0c\x7d\xc3\xd5\xff\xb4\xe2"
    b"\x72\xbe\x5d\x74\xf2\x7b\x89\x6f\x80\xde\xb1\xfe\x3b\x16\x96\xb1"
    b"\x9b\xdc\x06\xa7\x25\xc7\x12\x35\xc1\x9b\xf1\x74\xcf\x69\x26\x94"
    b"\xe4\x9b\x69\xc1\x9e\xf1\x4a\xd2\xef\xbe\x47\x86\x38\x4f\x25\xe3"
    b"\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5\x24\x0c\xa1\xcc\x77\xac\x9c\x65"
    b"\x2d\xe9\x2c\x6f\x59\x2b\x02\x75\x4a\x74\x84\xaa\x6e\xa6\xe4\x83"
    b"\x5c\xb0\xa9\xdc\xbd\x41\xfb\xd4\x76\xf9\x88\xda\x83\x11\x53\xb5"
    b"\x98\x3e\x51\x52\xee\x66\xdf\xab\xa8\x31\xc6\x6d\x2d\xb4\x32\x10"
    b"\xb0\x03\x27\xc8\x98\xfb\x21\x3f\xbf\x59\x7f\xc7\xbe\xef\x0e\xe4"
    b"\xc6\xe0\x0b\xf3\x3d\xa8\x8f\xc2\xd5\xa7\x91\x47\x93\x0a\xa7\x25"
    b"\x06\xca\x63\x51\xe0\x03\x82\x6f\x14\x29\x29\x67\x0a\x0e\x6e\x70"
    b"\x27\xb7\x0a\x85\x46\xd2\x2f\xfc\x2e\x1b\x21\x38\x5c\x26\xc9\x26"
    b"\x4d\x2c\x6d\xfc\x5a\xc4\x2a\xed\x53\x38\x0d\x13\x9d\x95\xb3\xdf"
    b"\x65\x0a\x73\x54\x8b\xaf\x63\xde\x76\x6a\x0a\xbb\x3c\x77\xb2\xa8"
    b"\x81\xc2\xc9\x2e\x47\xed\xae\xe6\x92\x72\x2c\x85\x14\x82\x35\x3b"
    b"\xa2\xbf\xe8\xa1\x4c\xf1\x03\x64\xa8\x1a\x66\x4b\xbc\x42\x30\x01"
    b"\xc2\x4b\x8b\x70\xd0\xf8\x97\x91\xc7\x6c\x51\xa3\x06\x54\xbe\x30"
    b"\xd1\x92\xe8\x19\xd6\xef\x52\x18\xd6\x99\x06\x24\x55\x65\xa9\x10"
    b"\xf4\x0e\x35\x85\x57\x71\x20\x2a\x10\x6a\xa0\x70\x32\xbb\xd1\xb8"
    b"\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e\x37\x6c\x08\x51\x41\xab\x53"
    b"\x27\x48\x77\x4c\xdf\x8e\xeb\x99\x34\xb0\xbc\xb5\xe1\x9b\x48\xa8"
    b"\x39\x1c\x0c\xb3\xc5\xc9\x5a\x63\x4e\xd8\xaa\x4a\xe3\x41\x8a\xcb"
    b"\x5b\x9c\xca\x4f\x77\x63\xe3\x73\x68\x2e\x6f\xf3\xd6\xb2\xb8\xa3"
    b"\x74\x8f\x82\xee\x5d\xef\xb2\xfc\x78\xa5\x63\x6f\x43\x17\x2f\x60"
    b"\x84\xc8\x78\x14\xa1\xf0\xab\x72\x8c\xc7\x02\x08\x1a\x64\x39\xec"
    b"\x90\xbe\xff\xfa\x23\x63\x1e\x28\xa4\x50\x6c\xeb\xde\x82\xbd\xe9"
    b"\xbe\xf9\xa3\xf7\xb2\xc6\x79\x15\xc6\x71\x78\xf2\xe3\x72\x53\x2b"
    b"\xca\x27\x3e\xce\xea\x26\x61\x9c\xd1\x86\xb8\xc7\x21\xc0\xc2\x07"
    b"\xea\xda\x7d\xd6\xcd\xe0\xeb\x1e\xf5\x7d\x4f\x7f\xee\x6e\xd1\x78"
    b"\x06\xf0\x67\xaa\x72\x17\x6f\xba\x0a\x63\x7d\xc5\xa2\xc8\x98\xa6"
    b"\x11\x3f\x98\x04\xbe\xf9\x0d\xae\x1b\x71\x0b\x35\x13\x1c\x47\x1b"
    b"\x28\xdb\x77\xf5\x23\x04\x7d\x84\x32\xca\xab\x7b\x40\xc7\x24\x93"
    b"\x3c\x9e\xbe\x0a\x15\xc9\xbe\xbc\x43\x1d\x67\xc4\x9c\x10\x0d\x4c"
    b"\x4c\xc5\xd4\xbe\xcb\x3e\x42\xb6\x59\x7f\x29\x9c\xfc\x65\x7e\x2a"
    b"\x5f\xcb\x6f\xab\x3a\xd6\xfa\xec\x6c\x44\x19\x8c\x4a\x47\x58\x17")



def _rotr(x, n):
    return ((x >> n) | (x << (64 - n))) & _M64


class Sha512:
    def __init__(self, data=b""):
        self._h = [int.from_bytes(_H0[i:i + 8], "big") for i in range(0, 64, 8)]
        self._buf = b""
        self._n = 0
        self.update(data)

    def update(self, data):
        self._buf += bytes(data)
        self._n += len(data)
        while len(self._buf) >= 128:
            self._block(self._buf[:128])
            self._buf = self._buf[128:]

    def _block(self, block):
        # The message schedule as a 16-word ring: an 80-word list grows to a 1 KB block, more
        # than a fragmented MCU heap may have in one piece.
        w = [int.from_bytes(block[i:i + 8], "big") for i in range(0, 128, 8)]
        a, b, c, d, e, f, g, h = self._h
        for t in range(80):
            if t >= 16:
                x, y = w[(t - 15) & 15], w[(t - 2) & 15]
                s0 = _rotr(x, 1) ^ _rotr(x, 8) ^ (x >> 7)
                s1 = _rotr(y, 19) ^ _rotr(y, 61) ^ (y >> 6)
                w[t & 15] = (w[t & 15] + s0 + w[(t - 7) & 15] + s1) & _M64
            t1 = (h + (_rotr(e, 14) ^ _rotr(e, 18) ^ _rotr(e, 41)) + ((e & f) ^ ((e ^ _M64) & g)) + int.from_bytes(_K[8 * t:8 * t + 8], "big")
                  + w[t & 15]) & _M64
            t2 = ((_rotr(a, 28) ^ _rotr(a, 34) ^ _rotr(a, 39)) + ((a & b) ^ (a & c) ^ (b & c))) & _M64
            a, b, c, d, e, f, g, h = (t1 + t2) & _M64, a, b, c, (d + t1) & _M64, e, f, g
        self._h = [(x + y) & _M64 for x, y in zip(self._h, (a, b, c, d, e, f, g, h))]

    def digest(self):
        h = self._h
        buf = self._buf
        tail = buf + b"\x80" + bytes((111 - len(buf)) % 128) + (self._n * 8).to_bytes(16, "big")
        for i in range(0, len(tail), 128):
            self._block(tail[i:i + 128])
        out = b"".join(x.to_bytes(8, "big") for x in self._h)
        self._h = h
        return out


def sha512(data):
    native = getattr(hashlib, "sha512", None)
    return native(data).digest() if native is not None else Sha512(data).digest()


# -- the curve: edwards25519 in extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z --

def _add(p, q):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * _D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p):
    x1, y1, z1, _ = p
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1) % P
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _recover_x(y, sign):
    """x for a y on the curve with x's low bit = sign (RFC 8032 5.1.3); None if there is none."""
    if y >= P:
        return None
    x2 = (y * y - 1) * _pow(_D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = _pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * _SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if x & 1 != sign:
        x = P - x
    return x


def decode_point(data):
    """A 32-byte encoded point -> extended coordinates; None if it encodes no curve point."""
    if len(data) != 32:
        return None
    y = _le(data)
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


def encode_point(p):
    x, y, z, _ = p
    zi = _pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


_BY = 4 * _pow(5, P - 2, P) % P
BASE = (_recover_x(_BY, 0), _BY, 1, _recover_x(_BY, 0) * _BY % P)


def verify(public, signature, message):
    """True when `signature` (64 bytes) is an Ed25519 signature of `message` under the 32-byte
    `public` key. Checks [S]B == R + [k]A' with the encodings compared (the cofactorless check
    that RFC 8032 allows and OpenSSL and libsodium make); rejects S >= L and invalid points."""
    if len(public) != 32 or len(signature) != 64:
        return False
    r_raw = bytes(signature[:32])
    s = _le(signature[32:])
    if s >= L:
        return False
    a = decode_point(public)
    if a is None or decode_point(r_raw) is None:
        return False
    k = _le(sha512(r_raw + bytes(public) + bytes(message))) % L
    # [S]B - [k]A in one pass over the bits of both scalars (Shamir's trick).
    neg_a = ((P - a[0]) % P, a[1], a[2], (P - a[3]) % P)
    both = _add(BASE, neg_a)
    q = (0, 1, 1, 0)
    for i in range(255, -1, -1):
        q = _double(q)
        sb, kb = (s >> i) & 1, (k >> i) & 1
        if sb and kb:
            q = _add(q, both)
        elif sb:
            q = _add(q, BASE)
        elif kb:
            q = _add(q, neg_a)
    return encode_point(q) == r_raw
