"""Failure detection: a phi-accrual detector over heartbeat arrivals, plus the Last Will.

phi is the suspicion that a node has failed given how long it has now been silent, measured
against the node's own history of heartbeat inter-arrival times (Hayashibara et al., 2004):
phi = -log10(P(a heartbeat arrives later than this)). phi 8 means the silence would happen by
chance once in 10^8 heartbeats.

Two floors keep a jittery but alive node from being declared dead: the spread of the
inter-arrival times is never taken below `min_std_s`, and `pause_s` of extra silence is accepted
on top of the mean (a garbage collection, a Wi-Fi retry). A node's Last Will is a stronger signal
than silence: the broker saw its session die, so the node is down at once.

Pure: times are passed in; the controller feeds arrivals and asks for verdicts, on a monotonic
clock (a wall clock stepping back would make silence negative).
"""
import math
from collections import deque

PHI_THRESHOLD = 8.0
WINDOW = 100
MIN_STD_S = 0.2
PAUSE_S = 1.0
# Before a node has a history: the heartbeat interval the protocol fixes (at least 1 Hz).
FIRST_INTERVAL_S = 1.0
# phi is reported in [0, PHI_MAX]: beyond it every verdict is the same, and math.exp would
# overflow (elapsed far below or above the mean: a heartbeat just in after a long steady
# interval, or a silence of hours).
PHI_MAX = 99.0
_EXP_MAX = 700.0   # math.exp overflows a double just above 709


def phi(elapsed, mean, std):
    """-log10 of the probability that a heartbeat comes later than `elapsed` (a logistic
    approximation of the normal distribution's tail, accurate to ~1e-4), within [0, PHI_MAX]."""
    y = (elapsed - mean) / std
    x = -y * (1.5976 + 0.070566 * y * y)
    e = math.exp(max(-_EXP_MAX, min(_EXP_MAX, x)))
    if elapsed > mean:
        p = -math.log10(e / (1.0 + e))
    else:
        p = -math.log10(1.0 - 1.0 / (1.0 + e))
    return max(0.0, min(PHI_MAX, p))


class NodeHistory:
    def __init__(self, window):
        self.intervals = deque(maxlen=window)
        self.last = None

    def add(self, now, heard_since=0.0):
        # An interval that spans a time the controller could not hear (its broker link down)
        # says nothing about the node: kept, it would slow detection for a window of heartbeats.
        if self.last is not None and now > self.last and self.last >= heard_since:
            self.intervals.append(now - self.last)
        self.last = now

    def stats(self):
        if not self.intervals:
            return FIRST_INTERVAL_S, FIRST_INTERVAL_S / 4
        n = len(self.intervals)
        mean = sum(self.intervals) / n
        var = sum((x - mean) ** 2 for x in self.intervals) / n
        return mean, math.sqrt(var)


class PhiAccrualDetector:
    def __init__(self, threshold=PHI_THRESHOLD, window=WINDOW, min_std_s=MIN_STD_S, pause_s=PAUSE_S):
        self.threshold = threshold
        self.window = window
        self.min_std_s = min_std_s
        self.pause_s = pause_s
        self.history = {}
        self.willed = set()

    def heartbeat(self, node_id, now, heard_since=0.0):
        """A sign of life: a heartbeat or a hello. heard_since: since when the controller could
        hear the fleet at all (as for phi())."""
        hist = self.history.get(node_id)
        if hist is None:
            hist = self.history[node_id] = NodeHistory(self.window)
        hist.add(now, heard_since)
        self.willed.discard(node_id)

    def last_will(self, node_id):
        """The broker published the node's Last Will: its session is gone."""
        self.willed.add(node_id)

    def forget(self, node_id):
        self.history.pop(node_id, None)
        self.willed.discard(node_id)

    def phi(self, node_id, now, heard_since=0.0):
        """Suspicion level now. heard_since: since when the controller could hear at all (its
        own broker link); silence before that is not the node's."""
        hist = self.history.get(node_id)
        if hist is None or hist.last is None:
            return 0.0
        mean, std = hist.stats()
        elapsed = now - max(hist.last, heard_since)
        return phi(elapsed, mean + self.pause_s, max(std, self.min_std_s))

    def is_down(self, node_id, now, heard_since=0.0):
        if node_id in self.willed:
            return True
        return self.phi(node_id, now, heard_since) >= self.threshold
