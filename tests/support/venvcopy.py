"""Copies of a virtualenv made in an instant: a board's install root that already has Python's
packages in place (as a board image with them would), so provisioning it needs no package index."""
import contextlib
import os
import shutil


def link_or_copy(src, dst):
    """Hard links make a copy of a 100+ MB venv instant; pyvenv.cfg, which `venv --upgrade`
    rewrites in place, is copied so that the original is left alone."""
    if os.path.basename(src) != "pyvenv.cfg":
        with contextlib.suppress(OSError):   # another filesystem: copied instead
            os.link(src, dst)
            return dst
    return shutil.copy2(src, dst)


def copy_venv(src, dst, skip=()):
    """dst as a copy of the venv at src, without the top-level entries named in skip."""
    shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy,
                    ignore=lambda folder, names: [n for n in names if folder == src and n in skip])
    return dst
