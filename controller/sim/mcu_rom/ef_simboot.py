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
    ef_romsim.attach()
    has_main = os = None
