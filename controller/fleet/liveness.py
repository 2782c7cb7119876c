"""When the controller may call a node dead: crash versus partition.

The phi-accrual detector (detector.py) judges each node by its own heartbeats. That is right
when one node dies, and wrong when the controller is the one that cannot hear: a frozen or
restarting broker, or the controller's own link, silences every node at once. Two guards keep
such a fault from being read as the fleet dying (and from moving work off healthy nodes):

- LinkWatch: the controller subscribes to its own lease, published through the broker once a
  tick. While the lease does not come back, the controller's broker path is broken, and no node
  is judged at all; when it comes back, silence from before that moment is not the nodes'
  (every node gets a full detection window again). Last Wills that arrive while the path is
  broken or within WILL_GRACE_S of its return are not taken at their word either: a broker
  that was frozen publishes the will of every client it then finds past its keepalive.
- Reconnect grace: for RECONNECT_GRACE_S after the controller can hear the fleet again, silent
  nodes are not judged: they are reconnecting with backoff, not dead.
- Mass silence: when most of the live fleet (more than half, at least two nodes) turns silent in
  the same tick without a Last Will, the controller assumes a partition between it and them, not
  that many boards crashed at once, and holds the verdicts for up to `hold_s`. A single board
  dying, or a Last Will, is acted on at once. A real site-wide outage is acted on after `hold_s`.
"""

# The own lease must come back within this long (it is sent once a tick, about every second).
LINK_STALE_S = 3.0
# Silence is judged up to this long after the own lease's last echo (a tick and some).
ECHO_SLACK_S = 1.5
# How long mass silence is taken for a partition before the nodes are called dead anyway.
PARTITION_HOLD_S = 20.0
# After the controller hears the fleet again (its own reconnect, or the broker path's return),
# silent nodes are given this long before any is judged: nodes reconnect with backoff (up to 2 s
# between tries, firmware/node.py), so some come back seconds after the controller does.
RECONNECT_GRACE_S = 10.0
# A Last Will is taken at its word only once the broker path has been healthy this long: a broker
# that was frozen publishes the wills of every client it then finds past its keepalive.
WILL_GRACE_S = 5.0


class LinkWatch:
    def __init__(self, enabled, stale_s=LINK_STALE_S):
        self.enabled = enabled
        self.stale_s = stale_s
        self.last_echo = None
        self.healthy_since = 0.0

    def echo(self, now):
        """The controller's own lease came back through the broker."""
        if self.last_echo is not None and now - self.last_echo > self.stale_s:
            self.healthy_since = now   # back after the path was stuck (not the first echo)
        self.last_echo = now

    def healthy(self, now):
        if not self.enabled:
            return True
        return self.last_echo is not None and now - self.last_echo <= self.stale_s

    def judge_time(self, now):
        """The moment up to which silence may be held against a node: now, or shortly after the
        own lease last came back (it comes back once a tick while the path works)."""
        if not self.enabled or self.last_echo is None:
            return now
        return min(now, self.last_echo + ECHO_SLACK_S)

    def trusts_wills(self, now):
        if not self.enabled:
            return True
        return self.healthy(now) and now - self.healthy_since >= WILL_GRACE_S


class Verdicts:
    """Which nodes to mark offline this tick, given who the detector says is down."""

    def __init__(self, hold_s=PARTITION_HOLD_S):
        self.hold_s = hold_s
        self.mass_since = None

    def decide(self, suspects, willed, live_count, now):
        """suspects: nodes the detector judges down; willed: those of them with a Last Will;
        live_count: nodes not offline before this tick. Returns (nodes to mark offline,
        a reason when verdicts on the others are held)."""
        silent = [n for n in suspects if n not in willed]
        dead = [n for n in suspects if n in willed]
        if len(silent) >= 2 and len(silent) * 2 > live_count:
            if self.mass_since is None:
                self.mass_since = now
            if now - self.mass_since < self.hold_s:
                return dead, "%d of %d live nodes silent at once: a partition, not crashes (held %.0f of %.0f s)" % (
                    len(silent), live_count, now - self.mass_since, self.hold_s)
        else:
            self.mass_since = None
        return dead + silent, None
