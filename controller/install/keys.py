"""The bundle signing key: an Ed25519 key pair. The private half signs every update bundle and
exists only on the controller host; boards hold the public half and can verify bundles but
never make one (docs/ota.md, docs/security.md).

On the controller host the private key lives in $EDGEFLEET_HOME/signing.key (default
~/.local/state/edgefleet/signing.key), as the 32-byte RFC 8032 seed in 64 hex digits, mode 0600
(controller/security/files.py). A board gets BOARD_FILE ("sign.pub", next to its config.json):
the 32-byte public key in 64 hex digits - install_public() is the only way anything here writes
to a board image. The old HMAC fleet key (LEGACY_FILE, "fleet.key") is read only to sign the one
migration bundle older boards need (docs/ota.md, "Migrating HMAC boards").
"""
import binascii
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import ConfigError
from ..paths import state_home
from ..security.files import write_private

BOARD_FILE = "sign.pub"
HOST_FILE = "signing.key"
LEGACY_FILE = "fleet.key"
KEY_BYTES = 32


def home():
    return state_home()


def default_path():
    return os.path.join(home(), HOST_FILE)


def parse(text, where="signing key"):
    """32 key bytes from a key file's text; ConfigError naming `where` if it is not 64 hex digits."""
    text = text.strip()
    try:
        key = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise ConfigError("%s is not hex: expected %d hex digits" % (where, 2 * KEY_BYTES))
    if len(key) != KEY_BYTES:
        raise ConfigError("%s holds %d bytes, expected %d" % (where, len(key), KEY_BYTES))
    return key


def _read(path, missing):
    try:
        with open(path) as f:
            return parse(f.read(), path)
    except FileNotFoundError:
        raise ConfigError(missing % path)


def load(path=None):
    """The private signing key (its 32-byte seed)."""
    return _read(path or default_path(), "no signing key at %s (create one with `edgefleet keygen`)")


def create(path=None, overwrite=False):
    """Write a new random signing key, readable only by its owner (written whole, then renamed,
    whatever mode an old file had); refuses to replace one unless told."""
    path = path or default_path()
    if os.path.exists(path) and not overwrite:
        raise ConfigError("a signing key already exists at %s; boards holding its public key would stop "
                          "accepting bundles signed with a new one" % path)
    key = os.urandom(KEY_BYTES)
    write_private(path, binascii.hexlify(key).decode() + "\n")
    return key


class PublicKey(bytes):
    """The 32 bytes of a public key alone (a sign.pub): it verifies bundles (public() gives it
    back as it is) and cannot sign one."""


def default_verify_path():
    """The key `deploy` checks bundles with: the private signing key where it is (the fleet
    host), else $EDGEFLEET_HOME/sign.pub (an operator's machine, from `edgefleet join`)."""
    private = default_path()
    return private if os.path.exists(private) else os.path.join(home(), BOARD_FILE)


def load_verifying(path=None):
    """A key that verifies bundles: a public key file (its name ends in .pub, as sign.pub) or
    the private signing key. Both are 64 hex digits, so the name tells which."""
    path = path or default_verify_path()
    if path.endswith(".pub"):
        return PublicKey(_read(path, "no bundle public key at %s (`edgefleet join` puts the fleet's there)"))
    return load(path)


def load_legacy(path=None):
    """The old shared HMAC fleet key, kept only to sign the migration bundle (docs/ota.md)."""
    return _read(path or os.path.join(home(), LEGACY_FILE),
                 "no old fleet key at %s: boards from before Ed25519 take only bundles signed with it")


def load_or_create(path=None):
    path = path or default_path()
    if os.path.exists(path):
        return load(path)
    return create(path)


def _private(key):
    if isinstance(key, PublicKey):
        raise ConfigError("a public key (sign.pub) verifies bundles but cannot sign them: "
                          "sign where the private key is (`edgefleet bundle`)")
    return Ed25519PrivateKey.from_private_bytes(bytes(key))


def public(key):
    """The 32-byte public key of a private signing key (a PublicKey is its own)."""
    if isinstance(key, PublicKey):
        return bytes(key)
    return _private(key).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(key, message):
    return _private(key).sign(bytes(message))


def verify(public_key, signature, message):
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_key)).verify(bytes(signature), bytes(message))
        return True
    except (InvalidSignature, ValueError):
        return False


def board_text(key):
    """What a board's BOARD_FILE holds for the private `key`: its PUBLIC key, in hex."""
    return binascii.hexlify(public(key)).decode() + "\n"


def install_public(dest_dir, key):
    """Put the public half of `key` on a board image (dest_dir: where its config.json goes)."""
    path = os.path.join(dest_dir, BOARD_FILE)
    with open(path, "w") as f:
        f.write(board_text(key))
    return path
