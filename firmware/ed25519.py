# Ed25519 signature verification (RFC 8032, section 5.1.7) in the MicroPython/CPython common
# subset: bundles are signed on the controller host with a key no board holds, and a board
# checks them with the public key alone (docs/ota.md, docs/security.md).
#
# Written from the RFC's math with arbitrary-precision ints, which every MicroPython port has.
# No MicroPython port's hashlib has sha512 (upstream extmod/modhashlib.c offers sha256, sha1
# and md5), so SHA-512 is here too, used only where hashlib lacks it. A board hashes one or two
# 128-byte blocks with it: what is signed is a 36-byte digest of the manifest (firmware/bundle.py),
# not the bundle. Verification is not constant-time; it handles only public data.
import binascii
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
# constants), as bytes: 80 ints would hold 4.7 KB of an MCU's heap, these 704 bytes.
_H0 = binascii.unhexlify(
    "6a09e667f3bcc908bb67ae8584caa73b3c6ef372fe94f82ba54ff53a5f1d36f1510e527fade682d19b05688c2b3e6c1f"
    "1f83d9abfb41bd6b5be0cd19137e2179")
_K = binascii.unhexlify(
    "428a2f98d728ae227137449123ef65cdb5c0fbcfec4d3b2fe9b5dba58189dbbc3956c25bf348b53859f111f1b605d019"
    "923f82a4af194f9bab1c5ed5da6d8118d807aa98a303024212835b0145706fbe243185be4ee4b28c550c7dc3d5ffb4e2"
    "72be5d74f27b896f80deb1fe3b1696b19bdc06a725c71235c19bf174cf692694e49b69c19ef14ad2efbe4786384f25e3"
    "0fc19dc68b8cd5b5240ca1cc77ac9c652de92c6f592b02754a7484aa6ea6e4835cb0a9dcbd41fbd476f988da831153b5"
    "983e5152ee66dfaba831c66d2db43210b00327c898fb213fbf597fc7beef0ee4c6e00bf33da88fc2d5a79147930aa725"
    "06ca6351e003826f142929670a0e6e7027b70a8546d22ffc2e1b21385c26c9264d2c6dfc5ac42aed53380d139d95b3df"
    "650a73548baf63de766a0abb3c77b2a881c2c92e47edaee692722c851482353ba2bfe8a14cf10364a81a664bbc423001"
    "c24b8b70d0f89791c76c51a30654be30d192e819d6ef5218d69906245565a910f40e35855771202a106aa07032bbd1b8"
    "19a4c116b8d2d0c81e376c085141ab532748774cdf8eeb9934b0bcb5e19b48a8391c0cb3c5c95a634ed8aa4ae3418acb"
    "5b9cca4f7763e373682e6ff3d6b2b8a3748f82ee5defb2fc78a5636f43172f6084c87814a1f0ab728cc702081a6439ec"
    "90befffa23631e28a4506cebde82bde9bef9a3f7b2c67915c67178f2e372532bca273eceea26619cd186b8c721c0c207"
    "eada7dd6cde0eb1ef57d4f7fee6ed17806f067aa72176fba0a637dc5a2c898a6113f9804bef90dae1b710b35131c471b"
    "28db77f523047d8432caab7b40c724933c9ebe0a15c9bebc431d67c49c100d4c4cc5d4becb3e42b6597f299cfc657e2a"
    "5fcb6fab3ad6faec6c44198c4a475817")


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
