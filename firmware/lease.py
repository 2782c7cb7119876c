# Fencing: the node's view of the controller's lease, as pure logic (no I/O, no clock).
#
# The controller publishes a lease about once a second. A node that has held it and then misses
# it for more than K of its own heartbeats is "fenced": the controller may already have moved its
# workloads to another node, so the node stops publishing results (they stay in its outbox on
# flash) until the lease is back AND the controller has re-confirmed its assignment with an
# `assign` received after the lease returned. Counting heartbeats rather than seconds keeps the
# rule free of a wall clock, which an MCU does not have.

DEFAULT_K = 3


class Lease:
    def __init__(self, k=DEFAULT_K):
        self.k = k
        self.held = False  # a controller has granted a lease since boot (or since it went offline)
        self.missed = 0    # heartbeats since the last lease
        self.fenced = False
        self.renewed = False  # the lease has come back since the node was fenced

    def renew(self):
        """A lease message arrived."""
        self.held = True
        self.missed = 0
        self.renewed = True

    def beat(self):
        """Called once per heartbeat; returns True when this heartbeat fenced the node."""
        if not self.held:
            return False
        self.missed += 1
        if self.missed > self.k and not self.fenced:
            self.fenced = True
            self.renewed = False
            return True
        return False

    def confirm(self):
        """The controller sent an assignment; returns True when that lifted the fence."""
        if self.fenced and self.renewed and self.missed <= self.k:
            self.fenced = False
            return True
        return False

    def release(self):
        """The controller went offline cleanly: nobody can move workloads, nothing to fence."""
        self.held = False
        self.missed = 0
        self.fenced = False
