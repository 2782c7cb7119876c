"""The fleet key: a 32-byte secret that signs bundles (HMAC-SHA256, which every MicroPython
port can check with hashlib). It is installed on a board when the board is flashed or
provisioned and never travels inside a bundle.

On the controller host it lives in $EDGEFLEET_HOME/fleet.key (default
~/.local/state/edgefleet/fleet.key), as 64 hex digits; on a board it is the file BOARD_FILE
next to the node's config.json, in the same form.
"""
import binascii
import contextlib
import os
import tempfile

from ..errors import ConfigError

BOARD_FILE = "fleet.key"
KEY_BYTES = 32


def home():
    return os.environ.get("EDGEFLEET_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state", "edgefleet")


def default_path():
    return os.path.join(home(), "fleet.key")


def parse(text, where="fleet key"):
    """The key bytes from a key file's text; ConfigError naming `where` if it is not 64 hex digits."""
    text = text.strip()
    try:
        key = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise ConfigError("%s is not hex: expected %d hex digits" % (where, 2 * KEY_BYTES))
    if len(key) != KEY_BYTES:
        raise ConfigError("%s holds %d bytes, expected %d" % (where, len(key), KEY_BYTES))
    return key


def load(path=None):
    path = path or default_path()
    try:
        with open(path) as f:
            return parse(f.read(), path)
    except FileNotFoundError:
        raise ConfigError("no fleet key at %s (create one with `edgefleet keygen`)" % path)


def create(path=None, overwrite=False):
    """Write a new random key, readable only by its owner; refuses to replace one unless told."""
    path = path or default_path()
    if os.path.exists(path) and not overwrite:
        raise ConfigError("a fleet key already exists at %s; boards flashed with it would stop "
                          "accepting bundles signed with a new one" % path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    key = os.urandom(KEY_BYTES)
    # A new file renamed over the old one: opening the old one would keep its mode (a 0644 key
    # stayed 0644 through `keygen --force`), and a crash mid-write would leave a truncated key.
    fd, tmp = tempfile.mkstemp(prefix=".fleet.key-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(to_board_text(key))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return key


def load_or_create(path=None):
    path = path or default_path()
    if os.path.exists(path):
        return load(path)
    return create(path)


def to_board_text(key):
    return binascii.hexlify(key).decode() + "\n"
