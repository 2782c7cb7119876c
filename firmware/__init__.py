# The node runtime's package. release_module lives here, the one module every part of the
# firmware already has in its heap, so the node and its helpers share it without importing
# each other (and without a module of its own to hold on an MCU).
import sys


def release_module(module):
    """Drop a module needed only now (the boot sequence, a command) so its heap comes back: on
    a 110 KB board every KB counts. The next import loads it again."""
    package, _, name = module.__name__.rpartition(".")
    sys.modules.pop(module.__name__, None)
    if package in sys.modules and hasattr(sys.modules[package], name):
        delattr(sys.modules[package], name)
