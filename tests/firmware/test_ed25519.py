# The bundle signature check (firmware/ed25519.py) under CPython and the real MicroPython:
# SHA-512 (FIPS 180-4) and RFC 8032 Ed25519 vectors, refusals, and the tests' own signer.
import binascii

from firmware import ed25519
import ed25519_sign
import otakit


def _hex(data):
    return binascii.hexlify(data).decode()


def _unblob(text):
    return binascii.unhexlify(text.replace(" ", ""))


# RFC 8032 section 7.1, TESTs 1-3: (public key, message, signature).
RFC8032 = [
    ("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
]


def test_sha512_matches_fips_vectors():
    cases = [(b"", "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"),
             (b"abc", "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"),
             (b"a" * 200, None)]
    for data, want in cases:
        got = _hex(ed25519.Sha512(data).digest())
        if want is not None:
            assert got == want, data
        h = ed25519.Sha512()
        for i in range(len(data)):
            h.update(data[i:i + 1])
        assert _hex(h.digest()) == got


def test_ed25519_verifies_rfc8032_vectors_and_refuses_changes():
    for pub, msg, sig in RFC8032:
        pub, msg, sig = _unblob(pub), _unblob(msg), _unblob(sig)
        assert ed25519.verify(pub, sig, msg)
        assert not ed25519.verify(pub, sig, msg + b"x")
        bad = bytearray(sig)
        bad[40] ^= 1
        assert not ed25519.verify(pub, bytes(bad), msg)
        bad = bytearray(sig)
        bad[3] ^= 1
        assert not ed25519.verify(pub, bytes(bad), msg)
        other = bytearray(pub)
        other[0] ^= 1
        assert not ed25519.verify(bytes(other), sig, msg)
    pub, msg, sig = [_unblob(x) for x in RFC8032[1]]
    # S >= L (S + L would verify in a malleable verifier) and wrong lengths are refused.
    s_plus_l = (int.from_bytes(sig[32:], "little") + ed25519.L).to_bytes(32, "little")
    assert not ed25519.verify(pub, sig[:32] + s_plus_l, msg)
    assert not ed25519.verify(pub, sig[:63], msg) and not ed25519.verify(pub[:31], sig, msg)


def test_the_test_signer_matches_rfc8032():
    seed = _unblob("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
    pub, msg, sig = [_unblob(x) for x in RFC8032[1]]
    assert ed25519_sign.public(seed) == pub and ed25519_sign.sign(seed, msg) == sig
    assert ed25519_sign.public(otakit.KEY) == otakit.PUB and ed25519_sign.public(otakit.OTHER_KEY) == otakit.OTHER_PUB
