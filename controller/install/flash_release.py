# The first code `edgefleet flash` runs on a board: it gives the heap back from the program the
# flasher interrupted (main.py still holds its modules and globals), so what follows can even be
# compiled on a board whose node filled its heap. Kept tiny for that reason: compiling it must
# fit in the few KB such a board has left. The board is reset after flashing, so nothing of
# value is lost.
# ef_wdt, the feed of the watchdog the interrupted node armed (boards/mcu_main.py), stays: it
# is fed first, and by every call of the agent after.
import gc
import sys
if "ef_wdt" in globals():
    ef_wdt()
for _name in list(globals()):
    if _name not in ("__name__", "__file__", "gc", "sys", "ef_wdt"):
        del globals()[_name]
sys.modules.clear()
gc.collect()
