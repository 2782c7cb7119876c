"""Entry point of a Linux (Pi-class) edgefleet node: the one place where the Linux board's HAL
and the firmware meet, as boards/mcu_main.py is on a microcontroller.

    python -m edgefleet.boards.linux_main config.json

`edgefleet node` runs the same function; the aarch64 lane (controller/sim/arm64.py) runs this
module directly, because a node does not carry the controller's host-side dependencies.
"""
import os
import sys

from edgefleet.boards import open_hal
from edgefleet.firmware import node
from edgefleet.firmware.errors import FirmwareError


def run(config_path, config_dir=None):
    """Run the node runtime until it is stopped; raises FirmwareError for a bad config.

    On an SD card with A/B slots (docs/ota.md) the node's code runs from the slot the boot
    selector picks, so an update really replaces it; otherwise from the installed package."""
    if config_dir:
        os.chdir(config_dir)
    from edgefleet.firmware import slots
    chosen = slots.select(".")
    if chosen is None:
        node.boot(config_path, open_hal)
        return
    slot, pointer = chosen
    run_slot(os.path.abspath(slot), pointer["ver"].get(pointer["active"]), config_path)


def run_slot(slot, version, config_path):
    """Boot the node from a slot folder holding the `firmware` and `boards` packages."""
    sys.path.insert(0, slot)
    # Inference child processes (procworker) import the firmware from the same slot.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (slot, os.environ.get("PYTHONPATH")) if p)
    import importlib
    slot_boards = importlib.import_module("boards")
    slot_node = importlib.import_module("firmware.node")
    slot_errors = importlib.import_module("firmware.errors")
    try:
        slot_node.boot(config_path, slot_boards.open_hal, os.path.basename(slot), version)
    except slot_errors.FirmwareError as e:
        raise FirmwareError(str(e))


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: linux_main.py CONFIG_JSON\n")
        return 2
    try:
        run(argv[1])
    except FirmwareError as e:
        sys.stderr.write("edgefleet-node: %s\n" % e)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
