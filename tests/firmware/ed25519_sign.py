# Ed25519 signing (RFC 8032, 5.1.5-5.1.6) for the firmware tests, which run under MicroPython
# too and must sign test bundles there. Boards never sign: this lives with the tests, on top of
# the firmware's verifier (firmware/ed25519.py). The controller signs with `cryptography`.
from firmware import ed25519 as E


def _mul(n, point):
    q = (0, 1, 1, 0)
    while n:
        if n & 1:
            q = E._add(q, point)
        point = E._double(point)
        n >>= 1
    return q


def _expand(seed):
    h = E.sha512(seed)
    a = E._le(h[:32])
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def public(seed):
    return E.encode_point(_mul(_expand(seed)[0], E.BASE))


def sign(seed, message):
    a, prefix = _expand(seed)
    pub = E.encode_point(_mul(a, E.BASE))
    r = E._le(E.sha512(prefix + message)) % E.L
    r_raw = E.encode_point(_mul(r, E.BASE))
    k = E._le(E.sha512(r_raw + pub + message)) % E.L
    return r_raw + ((r + k * a) % E.L).to_bytes(32, "little")
