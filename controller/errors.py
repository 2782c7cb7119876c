"""The controller's exception family: every error the CLI reports derives from EdgefleetError.

Two other families meet the CLI's single catch (controller/cli/__init__.py): the firmware's
(firmware/errors.py, root FirmwareError), for code a board runs too - the update bundle codec
and its errors (BundleError, BadSignature, CorruptBundle in firmware/update_errors.py) live
there once, used by the controller's bundle builder as well - and boards/errors.py's
ProfileError, for the board profiles in boards/profiles/ (boards/ imports no controller code).

ConfigError exists here and in firmware/errors.py on purpose, meaning different things: this
one is the host's configuration (fleet files, the CLI's options, keys, registries, simulated
fleets); the firmware's is a node's config.json on its flash, checked by the node itself and
carrying the offending `field`. Neither is ever raised for the other's input.

Every class carries the exit status the CLI ends with when it reports one (`exit_code`); the
firmware's and the boards' families cannot import this module, so exit_code_for() maps them.
The table (README.md, `edgefleet --help`):

  0  success
  2  usage: the command line itself is wrong (argparse's own status)
  3  config: a file, option value or name given does not exist or is invalid
  4  connection: a broker, SSH host or serial port could not be reached, or refused us
  5  operation: the command ran and failed (a rollout stopped, a node refused, a step failed)
"""

EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_CONNECTION = 4
EXIT_OPERATION = 5

EXIT_CODES = (
    (EXIT_USAGE, "usage", "the command line is wrong (unknown option, missing or malformed argument)"),
    (EXIT_CONFIG, "config", "a file, setting or name given does not exist or is invalid"),
    (EXIT_CONNECTION, "connection", "a broker, SSH host or serial port is unreachable or refused us"),
    (EXIT_OPERATION, "operation", "the command ran and failed: a rollout stopped, a node refused"),
)


class EdgefleetError(Exception):
    """Root of every error the controller and CLI raise on purpose. A subclass that is not more
    specific about its cause is an operation that failed."""

    exit_code = EXIT_OPERATION


class ConfigError(EdgefleetError):
    """The host's configuration is missing or invalid: a fleet file, a CLI option, the signing key,
    a registry or simulated-board index (a node's own config.json: firmware.errors.ConfigError)."""

    exit_code = EXIT_CONFIG


class MissingExtra(ConfigError):
    """An optional dependency a command needs is not installed: the message is the one command
    that installs it (controller/extras.py)."""


class BrokerError(EdgefleetError):
    """An MQTT broker could not be started or reached."""

    exit_code = EXIT_CONNECTION

    def __init__(self, message, host=None, port=None):
        super().__init__(message)
        self.host = host
        self.port = port


class SecurityError(EdgefleetError):
    """The fleet's security material is missing, unreadable or does not fit what is asked of it
    (no CA yet, an unknown principal, a certificate that does not name the broker's host).
    `path` names the file concerned, when there is one."""

    exit_code = EXIT_CONFIG

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


class ControllerFailed(EdgefleetError):
    """The controller's decision loop died (a bug no message handling caught): the process must
    exit so that its supervisor restarts it, since a controller that no longer ticks sends no
    leases and the whole fleet fences itself."""


class BoardError(EdgefleetError):
    """A simulated or real board could not be started, reached or talked to."""

    exit_code = EXIT_CONNECTION

    def __init__(self, message, board=None):
        super().__init__(message)
        self.board = board


class InUse(EdgefleetError):
    """Another edgefleet process holds what this one needs for itself (the demo's state folder)."""


class PlacementError(EdgefleetError):
    """A workload cannot be placed where it was asked to go."""

    def __init__(self, message, workload=None, node=None):
        super().__init__(message)
        self.workload = workload
        self.node = node


class NotFound(EdgefleetError):
    """A node, workload or model named by the user does not exist."""

    exit_code = EXIT_CONFIG


class FlashError(EdgefleetError):
    """Installing an image over a board's serial REPL failed: `port` is the board's link,
    `path` the file on the board's flash it failed on, when it was one file."""

    def __init__(self, message, port=None, path=None):
        super().__init__(message)
        self.port = port
        self.path = path


class SerialUnreachable(FlashError):
    """The board's serial port (or socket:// link) could not be opened."""

    exit_code = EXIT_CONNECTION


class ProvisionError(EdgefleetError):
    """Provisioning a Linux board over SSH failed: `host` is the target, `step` the step that failed."""

    def __init__(self, message, host=None, step=None):
        super().__init__(message)
        self.host = host
        self.step = step


class SSHUnreachable(ProvisionError):
    """The SSH connection to the board could not be opened (refused, no route, bad login)."""

    exit_code = EXIT_CONNECTION


class HostKeyError(ProvisionError):
    """The SSH host key a board presented is not one this controller trusts, so nothing was sent
    to it. `key_type` (ssh-ed25519, ...) and `fingerprint` (SHA256:..., as `ssh-keygen -l` prints
    it) name the key presented; `known_hosts` is the file it was checked against (None when the
    key was pinned with --host-key). This side refused the connection: a connection failure."""

    exit_code = EXIT_CONNECTION

    def __init__(self, message, host, key_type, fingerprint, known_hosts=None):
        super().__init__(message, host, "host key")
        self.key_type = key_type
        self.fingerprint = fingerprint
        self.known_hosts = known_hosts


class UnknownHostKey(HostKeyError):
    """The board's host has no entry in known_hosts, and trust on first use was not asked for."""


class ChangedHostKey(HostKeyError):
    """The board presented another key than the one on record: `expected` holds the fingerprints
    known_hosts lists for the host, or the one given with --host-key."""

    def __init__(self, message, host, key_type, fingerprint, known_hosts=None, expected=()):
        super().__init__(message, host, key_type, fingerprint, known_hosts)
        self.expected = list(expected)


class RevokedHostKey(HostKeyError):
    """The board presented a key that known_hosts marks @revoked."""


class RolloutError(EdgefleetError):
    """A deploy or rollback could not start, or stopped; carries the nodes it concerns."""

    def __init__(self, message, nodes=None):
        super().__init__(message)
        self.nodes = list(nodes or [])


class StoreError(EdgefleetError):
    """The fleet registry cannot be opened or used: not a registry, written by a newer edgefleet,
    or read-only where a write was needed. `location` names it."""

    exit_code = EXIT_CONFIG

    def __init__(self, message, location=None):
        super().__init__(message)
        self.location = location


class LeadershipLost(StoreError):
    """A controller replica that led the fleet found its fencing token stale in the registry
    (another replica leads now, or its lease ran out): whatever it was about to commit is rolled
    back, and it goes on as a follower (docs/scale.md)."""

    exit_code = EXIT_OPERATION


class NoAnswer(BrokerError):
    """An operator request that no controller answered in time (is `edgefleet controller`
    running?)."""


class RequestRefused(EdgefleetError):
    """The controller answered an operator request with an error (no such node, a move that
    placement forbids, a malformed request); the message is the controller's."""


class DashboardError(EdgefleetError):
    """The dashboard's web server could not start (its address taken or not this host's)."""

    exit_code = EXIT_CONNECTION


def exit_code_for(error):
    """The CLI's exit status for an error it reports: the class's own for EdgefleetError; the
    firmware's and the boards' families, which cannot import this module, mapped here."""
    from edgefleet.boards.errors import ProfileError
    from edgefleet.firmware import errors as firmware
    from edgefleet.firmware.update_errors import BundleError
    if isinstance(error, EdgefleetError):
        return error.exit_code
    # On the host a BundleError is always about a bundle file the user gave or asked for: one
    # that another key signed, that is corrupt, or whose contents do not fit the board.
    if isinstance(error, (ProfileError, firmware.ConfigError, BundleError)):
        return EXIT_CONFIG
    if isinstance(error, firmware.MQTTError):
        return EXIT_CONNECTION
    return EXIT_OPERATION
