# main.py of a MicroPython edgefleet node (copied to the board's flash as /main.py).
# The one place where the board's HAL and the firmware meet, and the stable boot selector:
# on a flash with A/B slots (docs/ota.md) it picks the slot (slots.py at the flash root,
# outside both slots, never replaced by an update) and boots the firmware from that slot.
import sys

try:
    import slots
    chosen = slots.select(".")
    del slots
except ImportError:
    chosen = None

if chosen is None:
    from boards import open_hal
    from firmware.node import boot
    boot("config.json", open_hal)
else:
    slot, pointer = chosen
    sys.path.insert(0, slot)
    try:
        from boards import open_hal
        from firmware.node import boot
        boot("config.json", open_hal, slot, pointer["ver"].get(pointer["active"]))
    except Exception as e:
        # A slot that cannot boot must reset the board, so the selector counts the try and
        # falls back once the tentative slot has used its tries.
        sys.print_exception(e)
        try:
            import machine
            machine.reset()
        except (ImportError, AttributeError):
            sys.exit(1)
