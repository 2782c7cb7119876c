"""A service for a simulated Linux board: tells "systemd" it is ready and feeds its watchdog
through the real Linux HAL (sd_notify), for argv[1] milliseconds, then stops feeding."""
import os
import sys
import time

from edgefleet.boards.hal_linux import LinuxHal

hal = LinuxHal({})
print("reset cause:", os.environ.get("EDGEFLEET_SIM_RESET_CAUSE"), flush=True)
print("armed:", hal.watchdog_start(5000), flush=True)
feed_s = int(sys.argv[1]) / 1000
start = time.monotonic()
while True:
    if time.monotonic() - start < feed_s:
        hal.watchdog_feed()
    time.sleep(0.05)
