"""Who may act from the dashboard: the fleet's operator login, the one the broker knows as
`ef.operator` (controller/security/principals.py) and an operator kit carries, checked as HTTP
Basic credentials. Anyone who can reach the dashboard may watch (read-only); drain, move and
the other acting requests need the login.

A fleet without security material (an open amqtt test bench) has no operator login; then the
dashboard keeps one of its own, made once in the same principals format (0600) under the
state folder, and says where.
"""
import base64
import binascii
import hmac
import os

from ..errors import SecurityError
from ..security.material import FleetSecurity
from ..security.principals import OPERATOR, OPERATOR_USER, PrincipalStore

OWN_LOGINS = "dashboard-logins.json"


class OperatorCredentials:
    def __init__(self, store, where):
        self.store = store
        self.where = where   # said on the console: where the password is found

    @classmethod
    def for_fleet(cls, security=None, state_dir=None):
        """The fleet's operator login when `security` (a FleetSecurity) holds one; otherwise a
        dashboard login of its own in `state_dir`, created on first use."""
        if security is not None and os.path.exists(security.principals.path):
            try:
                security.service(OPERATOR)
                return cls(security.principals, "the operator login (%s, user %s; `edgefleet operator-kit` "
                                                "carries it)" % (security.principals.path, OPERATOR_USER))
            except SecurityError:
                pass
        folder = state_dir or (security.dir if security is not None else FleetSecurity().dir)
        store = PrincipalStore(os.path.join(folder, OWN_LOGINS))
        store.ensure(OPERATOR_USER, OPERATOR)
        return cls(store, "the dashboard's own login (%s, user %s)" % (store.path, OPERATOR_USER))

    def operator(self):
        return self.store.get(OPERATOR_USER)

    def check(self, header):
        """The user name when `header` (an Authorization header's value) holds the operator's
        credentials; None otherwise (missing, malformed or wrong alike)."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        try:
            expected = self.operator()
        except SecurityError:
            return None
        # Both compared in constant time, so a wrong guess says nothing about which part was wrong.
        user_ok = hmac.compare_digest(user.encode(), expected.name.encode())
        password_ok = hmac.compare_digest(password.encode(), expected.password.encode())
        return user if user_ok and password_ok else None
