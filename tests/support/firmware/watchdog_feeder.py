# Test firmware for a simulated MCU board (copied to its flash as main.py): arms the board's
# watchdog through the real simulated HAL, feeds it for as long as feed_ms.txt says, then stops,
# as firmware whose critical task hung would. Prints what the board's reset-cause register says.
import time

from boards.hal_micropython import MicroPythonHal
from boards.hal_sim import SimHal

profile = {"watchdog": {"max_timeout_ms": 8388}}
hal = SimHal(MicroPythonHal(profile), profile)
print("reset cause:", hal.reset_cause())
with open("feed_ms.txt") as f:
    feed_ms = int(f.read())
print("armed:", hal.watchdog_start(400))
start = time.ticks_ms()
while True:
    if time.ticks_diff(time.ticks_ms(), start) < feed_ms:
        hal.watchdog_feed()
    time.sleep_ms(50)
