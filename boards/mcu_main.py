# main.py of a MicroPython edgefleet node (copied to the board's flash as /main.py).
# The one place where the board's HAL and the firmware meet.
import gc

# MicroPython's heap never moves objects: what fails on a small board is the largest free block,
# not the free total. Collecting every 4 KB of allocation keeps the objects that live for good
# packed low instead of scattered between garbage; on the ESP32 profile the node then connects
# with ~15 KB free after boot, where it needed ~27 KB without (measured with the simulated board).
gc.threshold(4096)

from boards import open_hal
from firmware.node import boot

try:
    boot("config.json", open_hal)
except KeyboardInterrupt:
    # Ctrl-C at the serial console (a person, or `edgefleet flash`) stopped the node. The REPL
    # that follows needs heap to compile anything, and a small board's node filled it: dropping
    # the node's modules (and asyncio's queue of its stopped tasks) makes all of it garbage.
    import sys
    sys.modules.clear()
    del boot, open_hal
    raise
