"""Retention: results and the audit log are kept for a period and up to a count, the rest pruned
in the background, so a registry stops growing once a fleet has run for that long.

Each table keeps what is newer than `keep_days` AND among its newest `keep_*` rows; whichever
bound bites first decides. Pruning goes oldest first, in short transactions of BATCH rows, on
its own connection to the registry (a thread of the controller's process), so the controller's
writes wait at most one batch. A pruned result leaves its (node, boot)'s floor behind
(controller/store/base.py): a late re-delivery of it is counted as stored, never stored again.

What that costs and holds for a 1,000-node fleet at the default rates is in docs/scale.md.
"""
import logging
import threading
import time

from ..errors import EdgefleetError

log = logging.getLogger(__name__)

DAY_S = 86400.0
# A week of results, but no more than 20 million rows (at 1 result/s from each of 1,000 nodes,
# the count bound bites first: about 5.5 hours of them), and the audit log's newest million
# events of the last 30 days.
DEFAULT_KEEP_DAYS = 7.0
DEFAULT_KEEP_RESULTS = 20_000_000
DEFAULT_KEEP_EVENT_DAYS = 30.0
DEFAULT_KEEP_EVENTS = 1_000_000
BATCH = 2000
EVERY_S = 60.0


class RetentionPolicy:
    def __init__(self, keep_days=DEFAULT_KEEP_DAYS, keep_results=DEFAULT_KEEP_RESULTS,
                 keep_event_days=DEFAULT_KEEP_EVENT_DAYS, keep_events=DEFAULT_KEEP_EVENTS):
        for name, value in (("keep_days", keep_days), ("keep_results", keep_results),
                            ("keep_event_days", keep_event_days), ("keep_events", keep_events)):
            if not value > 0:
                raise ValueError("%s must be positive, not %r" % (name, value))
        self.bounds = {"results": (keep_days * DAY_S, int(keep_results)),
                       "events": (keep_event_days * DAY_S, int(keep_events))}

    def cutoff(self, registry, table, now):
        """Rows of `table` that arrived before this instant go."""
        keep_s, keep_n = self.bounds[table]
        nth_newest = registry.newest_times(table, keep_n)
        # Strictly before the keep_n-th newest: at least keep_n rows stay (ties keep a few more).
        return max(now - keep_s, nth_newest if nth_newest is not None else float("-inf"))


def prune(registry, policy, now=None, batch=BATCH, stop=None):
    """Prune what `policy` lets go, batch by batch, each committed; {table: rows deleted}."""
    now = time.time() if now is None else now
    pruned = {}
    for table, step in (("results", registry.prune_results), ("events", registry.prune_events)):
        before = policy.cutoff(registry, table, now)
        pruned[table] = 0
        while not (stop is not None and stop.is_set()):
            n = step(before, batch)
            registry.commit()
            pruned[table] += n
            if n < batch:
                break
    return pruned


class RetentionWorker:
    """prune() every `every_s` on a registry connection of its own, until stopped."""

    def __init__(self, location, policy, every_s=EVERY_S, opener=None, active=None):
        from ..store import open_registry
        self.location = location
        self.policy = policy
        self.every_s = every_s
        self.open = opener or open_registry
        # active(): whether to prune this period (controller replicas: only the leader prunes).
        self.active = active or (lambda: True)
        self.pruned = {"results": 0, "events": 0}
        self.runs = 0
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name="edgefleet-retention", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        registry = None
        while not self._stop.is_set():
            if not self.active():
                self._stop.wait(self.every_s)
                continue
            try:
                if registry is None:
                    registry = self.open(self.location)
                for table, n in prune(registry, self.policy, stop=self._stop).items():
                    self.pruned[table] += n
                    if n:
                        log.info("retention pruned %d %s", n, table)
                self.runs += 1
            except (EdgefleetError, OSError, RuntimeError) as e:
                # The registry busy or away: the next period tries again, on a fresh connection.
                log.warning("retention could not prune this time: %s", e)
                registry = self._close(registry)
            except Exception as e:  # a database driver's own error types, whichever backend
                log.warning("retention could not prune this time: %s: %s", type(e).__name__, e)
                registry = self._close(registry)
            self._stop.wait(self.every_s)
        self._close(registry)

    @staticmethod
    def _close(registry):
        if registry is not None:
            try:
                registry.close()
            except Exception:
                pass
        return None

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
