# What a simulated MCU board with a ROM partition runs at power-on, before its flash's main.py:
# the partition's rom_ioctl is attached to `vfs` (ef_romsim.py) as a real board has it from
# reset, then main.py runs as the board's entry point. main.py's Ctrl-C handler clears
# sys.modules to free the heap; the hardware must outlive that, so it is attached again.
import ef_romsim
ef_romsim.attach()
try:
    import os
    os.stat("main.py")
    has_main = True
except OSError:
    has_main = False
try:
    if has_main:
        import main
finally:
    try:
        ef_romsim.attach()
    except MemoryError:
        # Interrupted inside a finaliser, the unix port leaves its heap locked: the REPL then
        # goes without rom_ioctl on `vfs` (the flash agent finds ef_romsim on its path anyway)
        # rather than the interpreter dying of an uncaught error here.
        pass
    has_main = os = None
