"""Who may connect to the fleet's broker: one principal per node, one for the controller, one for
operators (the CLI), one for the broker's own administration. Each has a role (acl.py turns
roles into topic rules) and a random password; the broker only ever sees its hash.

Node principals are named by their node id, which is also the only MQTT client id they may
connect with. The others carry a '.', which no node id can contain, so no node can be flashed
under a name that would inherit their rights.
"""
import base64
import contextlib
import fcntl
import json
import os

from ..errors import SecurityError
from . import files

NODE, CONTROLLER, OPERATOR, ADMIN = "node", "controller", "operator", "admin"
ROLES = (NODE, CONTROLLER, OPERATOR, ADMIN)
CONTROLLER_USER, OPERATOR_USER, ADMIN_USER = "ef.controller", "ef.operator", "ef.admin"
SERVICE_USERS = {CONTROLLER: CONTROLLER_USER, OPERATOR: OPERATOR_USER, ADMIN: ADMIN_USER}
PASSWORD_BYTES = 18
FORMAT = 1


class Principal:
    """A broker login: `name` is the MQTT user name (and, for a node, its client id)."""

    def __init__(self, name, role, password):
        self.name = name
        self.role = role
        self.password = password

    @property
    def client_id(self):
        """The only client id this principal may use, or None when any is allowed."""
        return self.name if self.role == NODE else None

    def __repr__(self):
        return "Principal(%r, %r)" % (self.name, self.role)   # never the password


def new_password():
    return base64.urlsafe_b64encode(os.urandom(PASSWORD_BYTES)).decode()


class PrincipalStore:
    """principals.json (0600) under the fleet's security folder; every change is one atomic
    rewrite under a lock, so `flash` and `provision` running side by side lose nothing."""

    def __init__(self, path):
        self.path = path

    @contextlib.contextmanager
    def _locked(self):
        files.private_dir(os.path.dirname(os.path.abspath(self.path)))
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, files.PRIVATE_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self):
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise SecurityError("cannot read the fleet's principals: %s" % e, self.path)
        if not isinstance(data, dict) or data.get("v") != FORMAT or not isinstance(data.get("principals"), dict):
            raise SecurityError("%s is not an edgefleet principals file (format %d)" % (self.path, FORMAT), self.path)
        return data["principals"]

    def _write(self, entries):
        files.write_private(self.path, json.dumps({"v": FORMAT, "principals": entries}, indent=1, sort_keys=True))

    def all(self):
        return [Principal(name, e["role"], e["password"]) for name, e in sorted(self._read().items())]

    def get(self, name):
        entry = self._read().get(name)
        if entry is None:
            raise SecurityError("no broker credentials for %r (run `edgefleet init`, or flash/provision the node)"
                                % name, self.path)
        return Principal(name, entry["role"], entry["password"])

    def ensure(self, name, role, rotate=False):
        """The principal `name`, created with a new password if missing (or if `rotate`)."""
        if role not in ROLES:
            raise SecurityError("unknown role %r" % role)
        with self._locked():
            entries = self._read()
            entry = entries.get(name)
            if entry is not None and entry["role"] != role:
                raise SecurityError("%r is already a %s principal, not a %s" % (name, entry["role"], role), self.path)
            if entry is None or rotate:
                entry = {"role": role, "password": new_password()}
                entries[name] = entry
                self._write(entries)
            return Principal(name, role, entry["password"])

    def replace(self, principals):
        """Make the store hold exactly `principals` (an operator's machine joining a fleet:
        controller/security/kit.py)."""
        with self._locked():
            self._write({p.name: {"role": p.role, "password": p.password} for p in principals})

    def revoke(self, name):
        """Forget a principal (a stolen board): True if it existed. The broker drops it on its
        next sync (controller/broker.py)."""
        with self._locked():
            entries = self._read()
            if entries.pop(name, None) is None:
                return False
            self._write(entries)
            return True

    def mtime(self):
        try:
            return os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return None
