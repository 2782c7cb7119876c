"""Entry point of a Linux (Pi-class) edgefleet node: the one place where the Linux board's HAL
and the firmware meet, as boards/mcu_main.py is on a microcontroller.

    python -m edgefleet.boards.linux_main config.json

`edgefleet node` runs the same function; the aarch64 lane (controller/arm64.py) runs this
module directly, because a node does not carry the controller's host-side dependencies.
"""
import os
import sys

from edgefleet.boards import open_hal
from edgefleet.firmware import node
from edgefleet.firmware.errors import FirmwareError


def run(config_path, config_dir=None):
    """Run the node runtime until it is stopped; raises FirmwareError for a bad config."""
    if config_dir:
        os.chdir(config_dir)
    node.boot(config_path, open_hal)


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
