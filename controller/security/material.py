"""A fleet's security material in one folder, $EDGEFLEET_HOME/security (0700):

  ca.key ca.pem          the fleet CA (ca.key never leaves this host)
  broker.key broker.pem  the broker's certificate, signed by the CA, for the names nodes use
  principals.json        every broker login (principals.py)

`edgefleet init` makes it; `flash`, `provision` and `demo` add node principals; the broker, the
controller and the CLI read it. Every file is 0600. An operator's machine (`edgefleet join`,
kit.py) holds only ca.pem and a principals.json with the operator login.
"""
import os
import socket

from ..errors import SecurityError
from ..netutil import WILDCARD_ADDRESSES
from ..paths import state_home
from . import files, pki
from .principals import ADMIN, CONTROLLER, NODE, OPERATOR, SERVICE_USERS, PrincipalStore


def home():
    return state_home()


def default_broker_names():
    """Names a broker on this host is reached by: loopback, and this host's name."""
    names = ["localhost", "127.0.0.1", socket.gethostname()]
    try:
        names.append(socket.getfqdn())
    except OSError:
        pass
    return names


class FleetSecurity:
    def __init__(self, folder=None):
        self.dir = folder or os.path.join(home(), "security")
        self.ca_key = os.path.join(self.dir, "ca.key")
        self.ca_cert = os.path.join(self.dir, "ca.pem")
        self.broker_key = os.path.join(self.dir, "broker.key")
        self.broker_cert = os.path.join(self.dir, "broker.pem")
        self.principals = PrincipalStore(os.path.join(self.dir, "principals.json"))

    def exists(self):
        """A fleet's whole material is here (this is the fleet host)."""
        return os.path.exists(self.ca_cert) and os.path.exists(self.ca_key)

    def trusts(self):
        """The fleet CA certificate is here: a fleet host, or an operator's machine that joined."""
        return os.path.exists(self.ca_cert)

    def _read(self, path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise SecurityError("no %s: this fleet has no security material yet (run `edgefleet init`)"
                                % os.path.basename(path), path)
        except OSError as e:
            raise SecurityError("cannot read %s: %s" % (path, e), path)

    def init(self, broker_names=(), force=False):
        """Make the CA (kept unless `force`: boards trust it), a broker certificate for
        `broker_names` plus this host's names, and the controller, operator and admin logins.
        Returns what it created, by name."""
        files.private_dir(self.dir)
        made = []
        if force or not self.exists():
            key, cert = pki.make_ca("edgefleet fleet CA (%s)" % socket.gethostname())
            files.write_private(self.ca_key, key)
            files.write_private(self.ca_cert, cert)
            made.append("ca")
        if self.ensure_broker_cert(broker_names, reissue=force or "ca" in made):
            made.append("broker certificate")
        for role in (CONTROLLER, OPERATOR, ADMIN):
            self.principals.ensure(SERVICE_USERS[role], role, rotate=force)
        for path in (self.ca_key, self.ca_cert, self.broker_key, self.broker_cert, self.principals.path):
            files.restrict(path)
        return made

    def ensure_broker_cert(self, names=(), reissue=False):
        """Issue the broker certificate again if it does not cover every name in `names`; True
        if it did. Nodes keep working across a reissue: they trust the CA, not this cert."""
        wanted = list(dict.fromkeys(list(names) + default_broker_names()))
        if not reissue and os.path.exists(self.broker_cert):
            covered = pki.server_names(self._read(self.broker_cert))
            if all(n in covered for n in names if n not in WILDCARD_ADDRESSES):
                return False
            wanted = list(dict.fromkeys(covered + wanted))
        key, cert = pki.issue_server(self._read(self.ca_key), self._read(self.ca_cert),
                                     [n for n in wanted if n not in WILDCARD_ADDRESSES])
        files.write_private(self.broker_key, key)
        files.write_private(self.broker_cert, cert)
        return True

    def require_trust(self):
        """This folder as a client of the fleet's broker (it has the CA certificate), else
        SecurityError."""
        if not self.trusts():
            raise SecurityError("no fleet CA certificate at %s (run `edgefleet init` on the fleet host, or "
                                "`edgefleet join KIT` on an operator's machine)" % self.ca_cert, self.dir)
        return self

    def require(self):
        if not self.exists():
            raise SecurityError("this fleet has no security material at %s (run `edgefleet init`)" % self.dir, self.dir)
        return self

    def broker_names(self):
        """The names the broker's certificate is valid for ([] before there is one)."""
        if not os.path.exists(self.broker_cert):
            return []
        return pki.server_names(self._read(self.broker_cert))

    def ca_pem(self):
        return self._read(self.ca_cert)

    def ca_der(self):
        return pki.to_der(self.ca_pem())

    def node(self, node_id, rotate=False):
        """The node's broker login, created on first use (flash/provision/demo)."""
        return self.principals.ensure(node_id, NODE, rotate=rotate)

    def service(self, role):
        """The controller's, operators' or the broker admin's login."""
        return self.principals.get(SERVICE_USERS[role])
