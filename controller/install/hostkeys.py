"""Which board a provisioning run talks to: its SSH host key, checked before anything is sent.

`edgefleet provision` uploads the key that decides which update bundles the board accepts (the
public half of the controller's signing key) and the node's broker login, so a run must not
go on with a host that merely answered on the right address. The key the host presents during
the SSH handshake - before authentication, before any command or upload - is checked against
an OpenSSH known_hosts file (default ~/.ssh/known_hosts, or --known-hosts FILE):
- an entry for the host with that key: go on;
- entries for the host, none with that key: ChangedHostKey, always (even with trust on first use);
- no entry: UnknownHostKey, unless trust on first use is asked for, which appends the key to the
  file (as `ssh` with StrictHostKeyChecking=accept-new does);
- a key marked `@revoked` in the file: RevokedHostKey.
A key pinned with --host-key SHA256:... (the form `ssh-keygen -lf` prints) replaces the file's
entries for that run: exactly that key is accepted.

Host fields are matched the way the file names them: plain names and [host]:port (a port other
than 22), and hashed entries (HashKnownHosts). Wildcard and negated patterns are not expanded,
and @cert-authority lines are ignored: provisioning does not use host certificates.
"""
import base64
import binascii
import hashlib
import hmac
import inspect
import os

from ..errors import ChangedHostKey, ConfigError, RevokedHostKey, UnknownHostKey
from ..extras import require

DEFAULT_FILE = os.path.join("~", ".ssh", "known_hosts")
# A known RSA key is offered by the server under these signature algorithms, not as "ssh-rsa".
RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")
# Where a Debian-like board keeps the public half of each host key type, for the error messages.
BOARD_KEY_FILES = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "ecdsa-sha2-nistp256": "ecdsa",
                   "ecdsa-sha2-nistp384": "ecdsa", "ecdsa-sha2-nistp521": "ecdsa"}


def fingerprint(blob):
    """The SHA256:... fingerprint of a public key blob (the decoded key field of a known_hosts line)."""
    return _fingerprint_of_digest(hashlib.sha256(blob).digest())


def _fingerprint_of_digest(digest):
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_fingerprint(text):
    """A --host-key value in canonical form; ConfigError unless it is SHA256:<43 base64 digits>."""
    text = text.strip()
    body = text[len("SHA256:"):] if text.startswith("SHA256:") else None
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True) if body else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != hashlib.sha256().digest_size:
        raise ConfigError("--host-key %r is not a SHA256 fingerprint: give it as `ssh-keygen -lf "
                          "/etc/ssh/ssh_host_ed25519_key.pub` prints it on the board, SHA256:..." % text)
    return _fingerprint_of_digest(raw)


def host_name(host, port):
    """The name a host's keys are filed under: `host` on port 22, `[host]:port` on any other."""
    return host if port in (None, 22) else "[%s]:%d" % (host, port)


class Entry:
    def __init__(self, names, key_type, blob, lineno):
        self.names = names
        self.key_type = key_type
        self.blob = blob
        self.lineno = lineno

    def matches(self, name):
        for pattern in self.names:
            if pattern.startswith("|1|"):
                salt_b64, _, hash_b64 = pattern[3:].partition("|")
                try:
                    salt = base64.b64decode(salt_b64)
                    expected = base64.b64decode(hash_b64)
                except (binascii.Error, ValueError):
                    continue
                if hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), expected):
                    return True
            elif pattern == name:
                return True
        return False


def parse_key(key_type, key_b64):
    """The key blob of a known_hosts line's key field, or None when it is not one."""
    try:
        blob = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    # The blob starts with its own type name; a line whose two disagree is corrupt.
    if blob[4:4 + len(key_type)] != key_type.encode():
        return None
    return blob


class KnownHosts:
    """An OpenSSH known_hosts file: its entries, its @revoked keys, and appending to it."""

    def __init__(self, path):
        self.path = path
        self.entries = []
        self.revoked = set()
        self._load()

    def _load(self):
        try:
            with open(self.path) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("cannot read known_hosts file %s: %s" % (self.path, exc))
        for lineno, line in enumerate(lines, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            marker = fields.pop(0) if fields[0].startswith("@") else None
            if len(fields) < 3:
                continue
            blob = parse_key(fields[1], fields[2])
            if blob is None:
                continue
            if marker == "@revoked":
                self.revoked.add(blob)
            elif marker is None:
                self.entries.append(Entry(fields[0].split(","), fields[1], blob, lineno))

    def lookup(self, name):
        return [entry for entry in self.entries if entry.matches(name)]

    def record(self, name, key_type, blob):
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "rb+") as f:
                # A last line without its newline would otherwise swallow the new entry.
                f.seek(0, os.SEEK_END)
                starts_clean = f.tell() == 0
                if not starts_clean:
                    f.seek(-1, os.SEEK_END)
                    starts_clean = f.read(1) == b"\n"
                line = "%s %s %s\n" % (name, key_type, base64.b64encode(blob).decode())
                f.write((line if starts_clean else "\n" + line).encode())
        except OSError as exc:
            raise ConfigError("cannot record the host key of %s in %s: %s" % (name, self.path, exc))
        self.entries.append(Entry([name], key_type, blob, None))


class HostKeyCheck:
    """The trust decision of one run: known_hosts, optionally trust on first use or a pinned key.

    Installed on a Fabric connection by attach(); paramiko then asks missing_host_key() about
    every host key (none are loaded into paramiko itself, so this is the one place that decides),
    and describe() says afterwards which key was accepted and how.
    """

    def __init__(self, known_hosts=None, trust_on_first_use=False, pinned=None):
        if trust_on_first_use and pinned:
            raise ConfigError("--host-key and --trust-on-first-use exclude each other: a pinned key "
                              "is the only one accepted")
        self.path = os.path.expanduser(known_hosts or DEFAULT_FILE)
        self.known = KnownHosts(self.path)
        self.trust_on_first_use = trust_on_first_use
        self.pinned = parse_fingerprint(pinned) if pinned else None
        self.outcome = None     # "known", "pinned" or "recorded", once a key was accepted
        self.accepted = None    # (key type, fingerprint) of that key

    def attach(self, conn):
        """Make `conn` (a fabric.Connection not yet open) check its host's key with this."""
        if "transport_factory" not in inspect.signature(conn.client.connect).parameters:
            raise ConfigError("checking SSH host keys needs paramiko 3.2 or later: pip install 'paramiko>=3.2'")
        name = host_name(conn.host, conn.port)
        conn.client.set_missing_host_key_policy(self)
        conn.connect_kwargs["transport_factory"] = lambda sock, **kw: self._transport(name, sock, **kw)

    def _transport(self, name, sock, **kwargs):
        # The server picks its host key from the algorithms the client lists, in the client's
        # order: list the types on record for this host first (as ssh does), or a host that also
        # has another type of key would present that one and look changed.
        paramiko = require("paramiko", "checking SSH host keys")
        transport = paramiko.Transport(sock, **kwargs)
        wanted = []
        for entry in ([] if self.pinned else self.known.lookup(name)):
            wanted.extend(RSA_ALGORITHMS if entry.key_type == "ssh-rsa" else (entry.key_type,))
        options = transport.get_security_options()
        offered = list(options.key_types)
        first = [k for k in dict.fromkeys(wanted) if k in offered]
        options.key_types = first + [k for k in offered if k not in first]
        return transport

    def missing_host_key(self, client, hostname, key):
        """paramiko's MissingHostKeyPolicy hook: returns to accept, raises a HostKeyError to refuse."""
        self.outcome = self.check(hostname, key.get_name(), key.asbytes())
        self.accepted = (key.get_name(), fingerprint(key.asbytes()))

    def check(self, name, key_type, blob):
        """How the key `blob` of host `name` is accepted ("known", "pinned" or "recorded"), or the
        HostKeyError refusing it."""
        fp = fingerprint(blob)
        if blob in self.known.revoked:
            raise RevokedHostKey("%s: SSH host key %s %s is marked @revoked in %s; the connection was "
                                 "closed before logging in" % (name, key_type, fp, self.path),
                                 name, key_type, fp, self.path)
        if self.pinned:
            if fp != self.pinned:
                raise ChangedHostKey(
                    "%s: SSH host key %s %s is not the one given with --host-key (%s); the connection "
                    "was closed before logging in" % (name, key_type, fp, self.pinned),
                    name, key_type, fp, None, [self.pinned])
            return "pinned"
        entries = self.known.lookup(name)
        if any(entry.blob == blob for entry in entries):
            return "known"
        on_board = "ssh-keygen -lf /etc/ssh/ssh_host_%s_key.pub" % BOARD_KEY_FILES.get(key_type, "ed25519")
        if entries:
            expected = [fingerprint(entry.blob) for entry in entries]
            listed = ", ".join("%s %s (line %s)" % (entry.key_type, f, entry.lineno or "recorded now")
                               for entry, f in zip(entries, expected))
            raise ChangedHostKey(
                "%s: SSH host key CHANGED: it presents %s %s, but %s lists %s for it. Someone may be "
                "impersonating the board, or it was reinstalled; the connection was closed before "
                "logging in. If it was reinstalled, compare that fingerprint with `%s` on the "
                "board's console, then remove the old entry (ssh-keygen -R '%s' -f %s) and run "
                "again with --host-key %s"
                % (name, key_type, fp, self.path, listed, on_board, name, self.path, fp),
                name, key_type, fp, self.path, expected)
        if not self.trust_on_first_use:
            raise UnknownHostKey(
                "%s: unknown SSH host key %s %s (no entry in %s); the connection was closed before "
                "logging in. Compare the fingerprint with `%s` on the board's console, then run "
                "again with --host-key %s, or with --trust-on-first-use to record it in %s"
                % (name, key_type, fp, self.path, on_board, fp, self.path), name, key_type, fp, self.path)
        self.known.record(name, key_type, blob)
        return "recorded"

    def describe(self):
        """What was accepted, for the run's report."""
        fp = "%s %s" % self.accepted
        if self.outcome == "recorded":
            return "trusted on first use: recorded %s in %s" % (fp, self.path)
        if self.outcome == "pinned":
            return "%s, as given with --host-key" % fp
        return "%s, known in %s" % (fp, self.path)
