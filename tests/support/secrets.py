"""The signing key must never reach a board: scan what flash, provision or bundle wrote."""
import binascii
import os


def _forms(key):
    text = binascii.hexlify(key)
    return [bytes(key), text, text.upper()]


def assert_no_secret(where, key, skip=()):
    """`where`: bytes (a bundle) or a folder (a board image, scanned file by file, but for the
    subfolders named in `skip`)."""
    if isinstance(where, (bytes, bytearray)):
        blobs = [("bundle", bytes(where))]
    else:
        blobs = []
        for folder, subdirs, names in os.walk(where):
            subdirs[:] = [d for d in subdirs if d not in skip]
            for name in names:
                path = os.path.join(folder, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as f:
                        blobs.append((path, f.read()))
        assert blobs, "nothing to scan at %s" % where
    for name, data in blobs:
        for form in _forms(key):
            assert form not in data, "the signing key is in %s" % name
