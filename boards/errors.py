# The boards package's own errors: it depends on neither the controller nor the firmware.
# Host-side only (boards/catalog.py); never copied to a board's flash.


class ProfileError(Exception):
    """A board profile (boards/profiles/NAME.json) is unknown, incomplete or inconsistent.

    The root of what boards/ raises on purpose; the CLI reports it beside the controller's
    EdgefleetError and the firmware's FirmwareError."""
