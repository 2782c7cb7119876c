"""Result intake and acknowledgements.

A result is admitted when the stream ledger says its node owns its input position (exactly once
across moves, controller/fleet/ledger.py), stored once by (node, boot, seq), and acknowledged:
per (node, boot), the ack carries the highest seq such that every result up to it is stored, so a
node drops from its flash outbox only what the registry holds.

Acks follow commits only. A stored result counts toward the watermark once the registry has
committed it (`settle()`, after the controller's commit), never before. A node's heartbeat moves
nothing by itself: its outbox's `oldest` only tells which missing results its full flash dropped,
and the watermark steps over those only when the result just after them has been committed - so
a heartbeat that lies (or a forged one) can never make the controller acknowledge a result the
registry does not hold.

A result redelivered with a (node, boot, seq) already stored but other content is a conflict
(a node that lost its boot counter, a bug, a forgery): the stored one stays, the conflict is
logged as a `result_conflict` event (once per node and boot), and it is not acknowledged: the
node keeps it, and everything after it, on flash until an operator looks, or until its outbox
drops it when full (it then reports a newer `oldest`, and acks resume from there).
"""
import logging

from edgefleet.firmware import protocol

from .effects import Publish

log = logging.getLogger(__name__)


class ResultIntake:
    def __init__(self, state, ledger, prefix, shared=False):
        self.state = state
        self.ledger = ledger
        self.prefix = prefix
        # shared: controller replicas split the fleet's results between them (docs/scale.md), so
        # the results just below one this replica stored may have been stored by another: the
        # watermark is read from the registry after every commit, never only counted here.
        self.shared = shared
        self._contiguous = {}   # (node, boot) -> highest seq such that every result up to it is stored
        self._ahead = {}        # (node, boot) -> stored seqs above that
        self._acks_due = set()
        self._dropped_below = {}  # (node, boot) -> the oldest seq the node still holds, as it says
        self._uncommitted = []    # (key, seq) stored but not yet committed
        self._conflicts = set()   # (node, boot) whose conflicts were reported already
        self.conflicts = 0
        self.results_total = 0
        self.duplicates = 0
        self.out_of_range = 0   # results dropped because their node did not own that input
        self.replays = 0        # results for a position the same node had delivered already

    def take(self, node_id, msg, now):
        if self._admit(node_id, msg):
            if self.state.store_result(msg, now):
                self.results_total += 1
            elif self._conflicting(node_id, msg, now):
                return
            else:
                self.duplicates += 1
        self._uncommitted.append(((node_id, msg["boot"]), msg["seq"]))

    def _conflicting(self, node_id, msg, now):
        stored = self.state.store.stored_result(node_id, msg["boot"], msg["seq"])
        if stored is None or all(stored[k] == msg.get(k) for k in stored):
            return False
        self.conflicts += 1
        # Once per (node, boot): a node that reuses a boot number conflicts on every result it
        # redelivers, and the event log must not grow with them (the rest are counted).
        key = (node_id, msg["boot"])
        if key not in self._conflicts:
            self._conflicts.add(key)
            self.state.add_event(node_id, "warn", "result_conflict", (
                "result %d of boot %d differs from the one stored; the stored one stays, this one is "
                "not acknowledged (further conflicts of this boot are only counted)") % (msg["seq"], msg["boot"]),
                {"seq": msg["seq"], "stored": stored}, now=now)
        return True

    def settle(self, committed=True):
        """The registry committed (or rolled back) what take() stored since the last call: only
        now do those results count toward acknowledgements."""
        done, self._uncommitted = self._uncommitted, []
        if not committed:
            return
        reread = set()
        for key, seq in done:
            if key not in self._contiguous or (self.shared and key not in reread):
                # A controller that restarted resumes from what its registry already holds.
                self._contiguous[key] = self.state.store.contiguous_results(*key, since=self._contiguous.get(key, 0))
                reread.add(key)
            if seq > self._contiguous[key]:
                self._ahead.setdefault(key, set()).add(seq)
            self._advance(key)

    def _advance(self, key):
        """Raise (node, boot)'s acknowledgement watermark past every stored result just above
        it, and over a gap the node says its outbox dropped when the result after it is stored;
        an ack becomes due."""
        ahead = self._ahead.setdefault(key, set())
        contiguous = self._contiguous[key]
        oldest = self._dropped_below.get(key, 0)
        while True:
            if contiguous + 1 in ahead:
                contiguous += 1
                ahead.discard(contiguous)
            elif contiguous + 1 < oldest and oldest in ahead:
                contiguous = oldest - 1
            else:
                break
        self._contiguous[key] = contiguous
        self._acks_due.add(key)

    def note_dropped(self, node_id, oldest):
        """The node's heartbeat says results before `oldest` ([boot, seq]) are gone from its
        flash: the next committed result at or after it may step the watermark over them."""
        # The shape is checked here, not in firmware/protocol.py: only the controller reads it.
        if isinstance(oldest, list) and len(oldest) == 2 and all(type(v) is int for v in oldest):
            self._dropped_below[(node_id, oldest[0])] = oldest[1]

    def _admit(self, node_id, msg):
        """A result is stored only when its node owns its input position and no other result
        for that position was stored."""
        pos = msg.get("in")
        if pos is None:
            return True
        lane = self.ledger.owner_lane(msg["wl"], node_id, pos)
        if lane is None and not self.ledger.tracks(msg["wl"]):
            return True  # a workload the ledger does not track (no placement made by this registry)
        if lane is None:
            self.out_of_range += 1
            return False
        if not self.ledger.accept(msg["wl"], lane, pos, node_id, msg["boot"], msg["seq"]):
            if self.ledger.accepted_by(msg["wl"], lane, pos) == node_id:
                # The same node again: a re-delivery (stored once by (node, boot, seq)) or a
                # rebooted node re-inferring from its cached assignment before the controller's
                # resume position reached it. Kept as that node's result; the stream still
                # counts the position once, from this one node.
                self.replays += 1
                return True
            self.duplicates += 1
            return False
        return True

    def flush_acks(self):
        effects = []
        for node_id, boot in sorted(self._acks_due):
            seq = self._contiguous.get((node_id, boot), 0)
            if seq > 0:
                payload = protocol.encode("ack", {"v": protocol.VERSION, "boot": boot, "seq": seq})
                effects.append(Publish(protocol.node_topic(self.prefix, node_id, "ack"), payload, 1, False))
        self._acks_due.clear()
        return effects
