# The HAL interface, declared once: everything the node runtime (firmware/) may call on its
# board's HAL. hal_linux (a Pi-class board), hal_sim (a simulated board, wrapping a real
# runtime's HAL) and hal_mock (unit tests) subclass Hal and override what their board does
# better than the defaults here; hal_micropython (a MicroPython board) defines every method
# itself, so an MCU never holds this module (tests/test_boards.py checks it implements all of
# it). The firmware calls these directly, never probing with getattr/hasattr.
#
#   profile                  the board profile (boards/profiles/NAME.json) the HAL was opened with
# Every backend implements:
#   mem()                    (free, total) bytes the node runs in: the heap on an MCU, RAM on Linux
#   reboot()                 reset the board (a Linux node's process exits; systemd restarts it)
# Defaults here, overridden where the board can tell more:
#   cpu_percent()            CPU load in percent, or None where there is no OS to ask (the node
#                            then reports its event loop's busy time)
#   power(cpu_pct)           the heartbeat's power reading {"src", "pct", "mw"} at that load;
#                            by default the profile's supply, with no battery gauge
#   temperature()            the chip's temperature in degrees C, or None
#   watchdog_start(ms)       arm the hardware (or service manager's) watchdog: the timeout in
#                            force in ms, or None when nothing watches the node (the node then
#                            resets itself when its supervision tree starves)
#   watchdog_feed()          feed what watchdog_start armed
#   reset_cause()            why the board last reset as its hardware tells ("watchdog", "power",
#                            "soft", "hard_reset", "deepsleep"), or None when it cannot
#   net_up(wifi, hostname)   async: bring up the board's own network before the link connects (and
#                            again after it dropped): `wifi` is config.json's "wifi" or None. The
#                            IP address when it just joined, None when there is nothing to do (a
#                            Linux board, a simulated one: the host's network); OSError naming why
#                            a join failed. Only hal_micropython joins (boards/wifi.py).
#   mpy_version()            the .mpy version this runtime loads (update bundles are checked
#                            against it), or None
#   heap_free_now()          free heap bytes at this moment, garbage not collected (the node's
#                            low-water mark, the runtime's peak), or None where that is no
#                            cheap question (a Linux board)
#   sensor(name)             a function of no arguments that takes one reading (an int, 0..65535)
#                            of the sensor the profile declares as `name` ("sensors" in
#                            boards/profiles/*.json): a workload's `sensor` input
#                            (firmware/source_sensor.py); OSError naming why where there is none
#   camera()                 the board's camera, opened (Linux boards: boards/camera_linux.py;
#                            simulated ones serve image files, boards/sim_camera.py): an object
#                            with read() -> (frame, true label or None), the frame a numpy
#                            uint8 array H x W (grey) or H x W x 3 (RGB), and close(); a
#                            workload's `camera` input (firmware/source_camera.py); OSError
#                            naming why where there is none (by default, and on an MCU)
#   pin_out(pin, on)         drive GPIO `pin` (the board's numbering) high or low: a workload's
#                            output.pin (firmware/outputs.py); OSError naming why where the
#                            board cannot (by default, and on Linux boards for now)
# Simulation hooks (boards/hal_sim.py), None on a real board:
#   extra_load()             load in percent beside the node's own, added to its CPU reading
#   heartbeat_delay_ms(ms)   the wait before the next heartbeat in ms (a simulated board jitters
#                            it); None: the configured interval
#
# Common subset, and small: a microcontroller holds this class in its heap from boot on (each
# method costs ~100 bytes there), so the "nothing to tell" defaults share one function, the
# methods every backend has are declared here in words only, and the docs live in this comment.


def _nothing(self, *args):
    return None


class Hal:
    name = "hal"
    profile = None
    cpu_percent = temperature = watchdog_start = watchdog_feed = reset_cause = mpy_version = heap_free_now = _nothing
    extra_load = heartbeat_delay_ms = _nothing

    async def net_up(self, wifi, hostname):
        return None

    def pin_out(self, pin, on):
        raise OSError("the %s HAL drives no GPIO" % self.name)

    def sensor(self, name):
        raise OSError("the %s HAL reads no sensor" % self.name)

    def camera(self):
        raise OSError("the %s HAL has no camera" % self.name)

    def power(self, cpu_pct):
        return {"src": self.profile.get("power", {}).get("source", "mains"), "pct": None, "mw": None}
