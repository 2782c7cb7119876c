"""One leader among controller replicas, elected through the registry.

Any number of `edgefleet controller --shared GROUP` processes may run against one PostgreSQL
registry and one broker. All of them take ingest (results, heartbeats, events) through the
broker's shared subscription; one of them, the leader, also decides: placement, migration,
rollouts, the nodes' lease, failure verdicts.

The lease is a row in the registry (holder, token, expires). A replica claims it when it is free
or ran out, which raises the token: the fencing token. The leader renews it every tick, and
every transaction the leader commits first checks that its token is still the current one
(FencedRegistry below, under the row's lock: a claim cannot slip in between the check and the
commit). So a leader that was paused or cut off past its lease finds its token stale at its next
commit: the transaction is rolled back, nothing it decided is published, and it carries on as a
follower. The replica that claims next loads the fleet from the registry, as a restarted
controller would, and continues from what the registry says.

With one controller and SQLite this changes nothing: it claims at once and keeps the lease.
"""
import logging
import threading
import time

from ..errors import LeadershipLost

log = logging.getLogger(__name__)

# How long a lease lasts without renewal: a leader silent this long is replaced.
LEASE_TTL_S = 3.0
# The lease is renewed this often, by a thread of its own (LeaseKeeper)...
RENEW_EVERY_S = 0.5
# ...as long as the leader's decision loop came round within this long. A loop busy with one
# long tick (placement over thousands of nodes, a fleet reconnecting at once) keeps the lease;
# one stuck for this long loses it.
LOOP_STALL_S = 15.0


class Leadership:
    def __init__(self, holder, ttl_s=LEASE_TTL_S):
        self.holder = holder
        self.ttl_s = ttl_s
        self.token = None

    @property
    def leading(self):
        return self.token is not None

    def claim(self, registry):
        """Lead if the lease is free; True when this replica leads now."""
        token = registry.claim_leadership(self.holder, self.ttl_s)
        registry.commit()
        if token is not None:
            self.token = token
            log.info("%s leads the fleet, fencing token %d", self.holder, token)
        return token is not None

    def renew(self, registry):
        """Extend the lease; LeadershipLost (and a follower again) when it is stale."""
        ok = registry.renew_leadership(self.holder, self.token, self.ttl_s)
        registry.commit()
        if not ok:
            self.lost()

    def check(self, registry):
        """Inside the transaction about to commit: LeadershipLost when the token is stale."""
        if not registry.check_leadership(self.holder, self.token):
            registry.rollback()
            self.lost()

    def lost(self):
        token, self.token = self.token, None
        raise LeadershipLost("%s no longer leads: its fencing token %s is stale" % (self.holder, token))


class FencedRegistry:
    """The registry as the leader's fleet core sees it: every commit checks the fencing token
    first (Leadership.check), so a stale leader commits nothing."""

    def __init__(self, registry, leadership):
        self._registry = registry
        self._leadership = leadership

    def commit(self, durable=True):
        self._leadership.check(self._registry)
        self._registry.commit(durable)

    def __getattr__(self, name):
        return getattr(self._registry, name)


class LeaseKeeper:
    """Renews the leader's lease on a registry connection of its own, every RENEW_EVERY_S, while
    the decision loop shows progress (`progress()`: the monotonic time it last came round). So a
    slow tick is no failover, a dead or stuck process is. A renewal that finds the token stale
    changes nothing here: the loop's next commit finds out (Leadership.check) and steps down."""

    def __init__(self, opener, leadership, progress, every_s=RENEW_EVERY_S, stall_s=LOOP_STALL_S):
        self.open = opener
        self.leadership = leadership
        self.progress = progress
        self.every_s = every_s
        self.stall_s = stall_s
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name="edgefleet-lease", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        registry = None
        while not self._stop.wait(self.every_s):
            token = self.leadership.token
            if token is None or time.monotonic() - self.progress() > self.stall_s:
                continue
            try:
                if registry is None:
                    registry = self.open()
                registry.renew_leadership(self.leadership.holder, token, self.leadership.ttl_s)
                registry.commit()
                self.renewals += 1
            except Exception as e:   # the registry away: the lease runs out, as it should
                log.warning("could not renew the leadership lease: %s", e)
                try:
                    registry.close()
                except Exception:
                    pass
                registry = None
        if registry is not None:
            registry.close()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
