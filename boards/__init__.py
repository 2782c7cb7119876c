# Board profiles (data, in profiles/) and hardware abstraction layers: the interface, declared
# once in hal.py (Hal), and one module per backend implementing it (hal_micropython without the
# base class, to spare an MCU's heap; the others as Hal subclasses):
#   hal_micropython  a real MicroPython board (machine, esp32/rp2 specifics)
#   hal_linux        a real Linux board (/proc, /sys)
#   hal_sim          a simulated board: a real runtime HAL plus a power model (power.py) and
#                    injected load; only simulated boards carry it (controller/install/image.py)
#   hal_mock         fixed values for unit tests; on no board
# Only these modules touch machine, /proc and /sys; the firmware sees the HAL interface alone.
# Host-side only: catalog.py (profiles) and errors.py (ProfileError); boards/ imports no
# controller code.

HAL_BACKENDS = ("micropython", "linux", "sim", "mock")


def open_hal(backend, profile, options=None):
    """Build the HAL for a backend name; imports only that backend's module."""
    options = options or {}
    if backend == "micropython":
        from .hal_micropython import MicroPythonHal
        return MicroPythonHal(profile)
    if backend == "linux":
        from .hal_linux import LinuxHal
        return LinuxHal(profile, options.get("sysroot", ""), options)
    if backend == "sim":
        from .hal_sim import SimHal
        base = open_hal(options.get("base", "micropython"), profile, options)
        return SimHal(base, profile, options.get("sim_file", "sim.json"), options.get("sim_layer_bytes", 0),
                      options.get("rom_image_bytes", 0))
    if backend == "mock":
        from .hal_mock import MockHal
        return MockHal(profile)
    raise ValueError("unknown HAL backend %r (known: %s)" % (backend, ", ".join(HAL_BACKENDS)))
