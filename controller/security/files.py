"""Files that hold secrets: written owner-only (0600) whatever mode an old file had, and
replaced atomically so a reader never sees half a key."""
import os
import tempfile

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path):
    os.makedirs(path, mode=PRIVATE_DIR_MODE, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def write_private(path, data, mode=PRIVATE_FILE_MODE):
    """Write bytes or text to `path` with `mode`; the temp file is made with the mode before
    a byte is written, then renamed over the old file."""
    if isinstance(data, str):
        data = data.encode()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def restrict(path, mode=PRIVATE_FILE_MODE):
    """Narrow an existing file (the registry, say) to `mode`, if it exists."""
    if os.path.exists(path):
        os.chmod(path, mode)
