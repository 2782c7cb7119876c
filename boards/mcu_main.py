# main.py of a MicroPython edgefleet node (copied to the board's flash as /main.py).
# The one place where the board's HAL and the firmware meet, and the stable boot selector:
# on a flash with A/B slots (docs/ota.md) it picks the slot (slots.py at the flash root,
# outside both slots, never replaced by an update) and boots the firmware from that slot.
import gc
import sys

# MicroPython's heap never moves objects: what fails on a small board is the largest free block,
# not the free total. Collecting every 4 KB of allocation while the firmware loads keeps the
# objects that live for good packed low instead of scattered between garbage; on the ESP32
# profile the node then connects with ~15 KB free after boot, where it needed ~27 KB without
# (measured with the simulated board). The HAL then sets the profile's own steady-state pace.
gc.threshold(4096)

try:
    import slots
    slot = slots.select(".")
    sys.modules.pop("slots", None)   # needed again only at the next boot
    del slots
    if slot is not None:
        # Only the slot and its version live on: the node runs for good beside this module's
        # globals, and on the smallest board the pointer dict is heap it needs.
        slot, version = slot[0], slot[1]["ver"].get(slot[1]["active"])
        gc.collect()
except ImportError:
    slot = None

try:
    if slot is None:
        from boards import open_hal
        from firmware.node import boot
        boot("config.json", open_hal)
    else:
        sys.path.insert(0, slot)
        try:
            # Only a board whose code is in ROM has romboot (docs/ota.md): it mounts the slot's
            # image at /rom, ahead of the slot's files on sys.path, and drops itself.
            try:
                import romboot
            except ImportError:
                romboot = None
            if romboot is not None:
                romboot.mount(slot)
                romboot = None
            from boards import open_hal
            from firmware.node import boot
            boot("config.json", open_hal, slot, version)
        except Exception as e:
            # A slot that cannot boot must reset the board, so the selector counts the try and
            # falls back once the tentative slot has used its tries.
            sys.print_exception(e)
            try:
                import machine
                machine.reset()
            except (ImportError, AttributeError):
                # The unix port (a simulated board) has no machine.reset(): leaving the
                # interpreter is its reset, and under `-i` only ending the process leaves it
                # (as boards/hal_micropython.py's reboot does).
                if sys.platform == "linux":
                    import os
                    os.system("kill -TERM $PPID")
                sys.exit(1)
except KeyboardInterrupt:
    # Ctrl-C at the serial console (a person, or `edgefleet flash`) stopped the node. The REPL
    # that follows needs heap to compile anything, and a small board's node filled it: dropping
    # the node's modules (and asyncio's queue of its stopped tasks) makes all of it garbage.
    # What survives: this module's globals, which are the REPL's (__main__), among them
    # `ef_wdt` once the node armed the watchdog (the HAL's watchdog_start puts it here): the
    # watchdog's feed, a callable. The watchdog cannot be stopped and nothing else feeds it now:
    # `edgefleet flash` calls ef_wdt() between its commands (controller/install/flash_agent.py).
    sys.modules.clear()
    boot = open_hal = None
    raise
