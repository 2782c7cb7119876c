"""The `edgefleet` command line.

One module per command group (run, observe, operate, sim, deploy, install), each with a
register(subparsers); what they share is in common.py. Every command's errors are
EdgefleetError subclasses (or the firmware's FirmwareError, for code shared with the boards,
or boards/errors.py's ProfileError, for board profiles), caught once in main() and printed as `edgefleet: what went wrong`."""
import argparse
import logging
import sys

from edgefleet.boards.errors import ProfileError
from edgefleet.firmware.errors import FirmwareError

from ..errors import EdgefleetError

GROUPS = ("run", "observe", "operate", "sim", "deploy", "install", "secure")


def build_parser():
    import importlib
    p = argparse.ArgumentParser(prog="edgefleet", description="ML inference on fleets of edge boards over MQTT")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        importlib.import_module("." + group, __name__).register(sub)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except (EdgefleetError, FirmwareError, ProfileError) as e:
        print("edgefleet: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
