# Why an update bundle was refused (docs/ota.md). Apart from errors.py because only a node
# receiving an update needs these classes: on a microcontroller each class costs ~400 bytes of
# heap from boot on. The one definition of these errors: the controller's bundle builder and
# inspector (controller/deploy/bundle.py) raise them too, for the same codec (firmware/bundle.py).
from .errors import FirmwareError


class BundleError(FirmwareError):
    """An update bundle was refused (docs/ota.md); the node keeps running its current version."""


class BadSignature(BundleError):
    """The bundle's manifest signature does not verify under this board's public key (unsigned,
    tampered, or signed by anyone but the controller)."""


class WrongBoard(BundleError):
    """The bundle was built for another board, runtime or .mpy version."""


class CorruptBundle(BundleError):
    """The bundle's bytes do not match its manifest: bad header, bad path, wrong hash, extra bytes."""


class TruncatedBundle(BundleError):
    """The bundle ended before every file in its manifest was complete."""


class Downgrade(BundleError):
    """A validly signed bundle whose sequence number is not above the lowest this node accepts."""
