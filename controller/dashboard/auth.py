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
import threading
import time

from ..errors import SecurityError
from ..security.material import FleetSecurity
from ..security.principals import OPERATOR, OPERATOR_USER, PrincipalStore

OWN_LOGINS = "dashboard-logins.json"
# Wrong credentials from one address: this many, then one more every FAILURE_EVERY_S; the rest
# are refused unchecked (guessing the operator's 144-bit password is hopeless anyway; this keeps
# a guesser from costing the controller's host a file read per attempt).
FAILURE_BURST = 10
FAILURE_EVERY_S = 6.0
MAX_ADDRESSES = 1000


class Throttled(Exception):
    """Too many wrong credentials from one address lately."""


class OperatorCredentials:
    def __init__(self, store, where, clock=time.monotonic):
        self.store = store
        self.where = where   # said on the console: where the password is found
        self.clock = clock
        self._failures = {}  # address -> (guesses left, when counted): a token bucket per address
        self._lock = threading.Lock()

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

    def check(self, header, address="?"):
        """The user name when `header` (an Authorization header's value) holds the operator's
        credentials; None otherwise (missing, malformed or wrong alike). Throttled when
        `address` guessed wrong too often lately."""
        if not header:
            return None
        now = self.clock()
        with self._lock:
            if self._guesses_left(address, now) < 1:
                raise Throttled(address)
        user = self._check(header)
        if user is None:
            with self._lock:
                self._failures[address] = (self._guesses_left(address, now) - 1, now)
                if len(self._failures) > MAX_ADDRESSES:   # forget those whose bucket is full again
                    for key in [k for k in self._failures if self._guesses_left(k, now) >= FAILURE_BURST]:
                        del self._failures[key]
        return user

    def _guesses_left(self, address, now):
        left, at = self._failures.get(address, (FAILURE_BURST, now))
        return min(FAILURE_BURST, left + max(0.0, now - at) / FAILURE_EVERY_S)

    def _check(self, header):
        if not header.startswith("Basic "):
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
