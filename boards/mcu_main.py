# main.py of a MicroPython edgefleet node (copied to the board's flash as /main.py).
# The one place where the board's HAL and the firmware meet.
from boards import open_hal
from firmware.node import boot

boot("config.json", open_hal)
