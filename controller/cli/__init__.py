"""The `edgefleet` command line.

One module per command group (run, observe, operate, sim, deploy, install), each with a
register(subparsers); what they share is in common.py. Every command's errors are
EdgefleetError subclasses (or the firmware's FirmwareError, for code shared with the boards,
or boards/errors.py's ProfileError, for board profiles), caught once in main() and printed as
one line, `edgefleet: what went wrong`, ending the process with the error's class's exit status
(the table in controller/errors.py, printed by --help)."""
import argparse
import logging
import os
import sys

from edgefleet.boards.errors import ProfileError
from edgefleet.firmware.errors import FirmwareError

from ..errors import EXIT_CODES, EXIT_CONFIG, EXIT_OPERATION, EdgefleetError, exit_code_for

GROUPS = ("run", "observe", "operate", "sim", "deploy", "install", "secure", "model")

# What a Unix tool killed by SIGPIPE ends with (128 + 13): `edgefleet status --json | head`.
EXIT_BROKEN_PIPE = 141


def version():
    from importlib.metadata import PackageNotFoundError, version as package_version
    try:
        return package_version("edgefleet")
    except PackageNotFoundError:   # run from a checkout that was never installed
        return "unknown (not installed)"


def _epilog():
    rows = ["exit status:", "  %-3d %-11s %s" % (0, "success", "")]
    rows += ["  %-3d %-11s %s" % row for row in EXIT_CODES]
    return "\n".join(row.rstrip() for row in rows)


class Parser(argparse.ArgumentParser):
    """argparse's parser, reporting a usage error as one line like every other failure (its
    exit status stays argparse's 2). Subcommand parsers are made of the same class."""

    def error(self, message):
        self.exit(2, "edgefleet: %s: %s (see `%s --help`)\n" % (
            self.prog[len("edgefleet "):] or "usage", message, self.prog))


def build_parser():
    import importlib
    p = Parser(prog="edgefleet", description="ML inference on fleets of edge boards over MQTT",
                                epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version="edgefleet %s" % version())
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        importlib.import_module("." + group, __name__).register(sub)
    return p


def _fail(message, code):
    print("edgefleet: %s" % message, file=sys.stderr)
    return code


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        code = args.func(args)
        sys.stdout.flush()   # a pipe closed early shows here, inside the handler below
        return code
    except (EdgefleetError, FirmwareError, ProfileError) as e:
        return _fail(e, exit_code_for(e))
    except BrokenPipeError:
        # The reader went away (`| head`): nothing is wrong to report. Point stdout at /dev/null
        # so the interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as e:
        # A file the user named: a bundle that is not there, an output folder that does not exist.
        named_wrong = isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError))
        return _fail("%s%s" % (e.strerror or e, ": %s" % e.filename if e.filename else ""),
                     EXIT_CONFIG if named_wrong else EXIT_OPERATION)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
