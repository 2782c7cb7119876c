"""Result intake and acknowledgements.

A result is admitted when the stream ledger says its node owns its input position (exactly once
across moves, controller/fleet/ledger.py), stored once by (node, boot, seq), and acknowledged:
per (node, boot), the ack carries the highest seq such that every result up to it is stored, so a
node drops from its flash outbox only what the registry holds.
"""
import logging

from edgefleet.firmware import protocol

from .effects import Publish

log = logging.getLogger(__name__)


class ResultIntake:
    def __init__(self, state, ledger, prefix):
        self.state = state
        self.ledger = ledger
        self.prefix = prefix
        self._contiguous = {}   # (node, boot) -> highest seq such that every result up to it is stored
        self._ahead = {}        # (node, boot) -> stored seqs above that
        self._acks_due = set()
        self.results_total = 0
        self.duplicates = 0
        self.out_of_range = 0   # results dropped because their node did not own that input
        self.replays = 0        # results for a position the same node had delivered already

    def take(self, node_id, msg, now):
        if self._admit(node_id, msg):
            if self.state.store_result(msg, now):
                self.results_total += 1
            else:
                self.duplicates += 1
        key = (node_id, msg["boot"])
        if key not in self._contiguous:
            # A controller that restarted resumes from what its registry already holds.
            self._contiguous[key] = self.state.store.contiguous_results(node_id, msg["boot"])
        if msg["seq"] > self._contiguous[key]:
            self._ahead.setdefault(key, set()).add(msg["seq"])
        self._advance(key, self._contiguous[key])

    def _advance(self, key, watermark):
        """Raise (node, boot)'s acknowledgement watermark to `watermark`, then on past every
        result already stored just above it; an ack becomes due."""
        ahead = self._ahead.setdefault(key, set())
        contiguous = max(self._contiguous[key], watermark)
        while contiguous + 1 in ahead:
            contiguous += 1
            ahead.discard(contiguous)
        self._contiguous[key] = contiguous
        self._acks_due.add(key)

    def skip_dropped(self, node_id, oldest):
        """Results before the node's oldest one on flash will never come (its outbox dropped
        them when full): stop waiting for them, so acknowledgements move on."""
        if not (isinstance(oldest, list) and len(oldest) == 2 and all(isinstance(v, int) for v in oldest)):
            return
        key = (node_id, oldest[0])
        if key in self._contiguous and self._contiguous[key] < oldest[1] - 1:
            self._advance(key, oldest[1] - 1)

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
