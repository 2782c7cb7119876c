"""The storage interface of the fleet registry.

The controller's working model is in memory (controller/fleet/state.py); the registry is where
it writes behind for durability and audit, and what other processes (`edgefleet status`,
`events`, `logs`, the deployer) read. Every backend stores the same schema, versioned: a
backend opening a registry of an older version migrates it, one of a newer version is refused
(StoreError). Rows come back as plain dicts and tuples, never backend objects.

One Registry object belongs to one thread. Writes are buffered until commit().
"""

import json

# The schema version this edgefleet writes. Bump it with a migration in every backend.
SCHEMA_VERSION = 6

# Workload fields beyond id, model, rate, input, replicas and constraints that a backend keeps.
WORKLOAD_EXTRA = ("resources", "priority", "output")

# What a result may carry beyond its label and score, as its workload's output spec asks
# (firmware/outputs.py): the k best classes, every value. Kept as one JSON column.
RESULT_OUTPUTS = ("top", "out")
STORED_RESULT = ("wl", "label", "truth", "score", "us", "up")


def result_outputs(msg):
    """The JSON a registry keeps of a result's outputs; None for a plain result."""
    outputs = {key: msg[key] for key in RESULT_OUTPUTS if key in msg}
    return json.dumps(outputs) if outputs else None


def stored_result_row(values, outputs):
    """A stored result as stored_result() returns it: `values` in STORED_RESULT's order."""
    row = dict(zip(STORED_RESULT, values))
    if outputs:
        row.update(json.loads(outputs))
    return row


class Registry:
    location = None
    readonly = False

    def close(self):
        raise NotImplementedError

    def commit(self, durable=True):
        """durable=False: what this transaction wrote may be lost if the database server
        crashes (not if this process does) - for heartbeats, whose next one a second later
        replaces them; a backend without the distinction commits as usual."""
        raise NotImplementedError

    def rollback(self):
        """Drop every write since the last commit."""
        raise NotImplementedError

    def schema_version(self):
        """The schema version of the stored registry."""
        raise NotImplementedError

    # -- nodes: {id, board, runtime, fw, slot, boot, state, caps, telemetry, last_seen, epoch} ----
    # fw: the version the node runs; slot: the A/B slot it runs it from (None: no slots, or a
    # node too old to say).

    def upsert_node(self, node_id, board, runtime, fw, boot, caps, state="online", now=None, slot=None):
        raise NotImplementedError

    def set_node_state(self, node_id, state, now=None):
        """Returns False when there is no such node."""
        raise NotImplementedError

    def record_heartbeat(self, node_id, telemetry, now=None):
        """{boot, state} of the node as stored, or None when there is no such node."""
        raise NotImplementedError

    def record_heartbeats(self, beats, now=None):
        """[(node_id, telemetry)] written at once: {node_id: {boot, state}} of those stored (a
        node without a row is left out)."""
        raise NotImplementedError

    def lock_nodes(self, node_ids, wait_s=None):
        """Hold the rows of these nodes for the rest of the transaction, taken in id order, so
        that writers which take all their rows first never wait on each other in a circle. With
        wait_s, no statement of the transaction waits longer than that on another's locks: it
        fails, and busy() says why."""
        raise NotImplementedError

    def busy(self, error):
        """Whether `error` is a statement that gave up waiting on another transaction's locks."""
        return False

    def set_epoch(self, node_id, epoch):
        raise NotImplementedError

    def nodes(self):
        raise NotImplementedError

    def node(self, node_id):
        raise NotImplementedError

    # -- declared workloads and placements ------------------------------------------------------

    def put_workload(self, wl):
        raise NotImplementedError

    def remove_workload(self, workload_id):
        """Also removes the workload's placements."""
        raise NotImplementedError

    def workloads(self):
        raise NotImplementedError

    def placements(self):
        """[(workload, node)], sorted."""
        raise NotImplementedError

    def place(self, workload_id, node_id, now=None):
        raise NotImplementedError

    def unplace(self, workload_id, node_id):
        raise NotImplementedError

    # -- results ----------------------------------------------------------------------------------

    def store_result(self, msg, now=None):
        """Store a result once; False when (node, boot, seq) was stored already."""
        raise NotImplementedError

    def contiguous_results(self, node_id, boot, since=0):
        """The highest seq such that results 1..seq of (node, boot) are all stored; `since`: a seq
        known to be that far already (the search starts above it)."""
        raise NotImplementedError

    def stored_result(self, node_id, boot, seq):
        """The stored result (node, boot, seq) as {wl, label, truth, score, us, up}, or None."""
        raise NotImplementedError

    def result_counts(self):
        """{node: results stored}."""
        raise NotImplementedError

    def result_totals(self):
        """Per workload {results, correct, with_truth, sum_us}: what accuracy and mean time are made of."""
        raise NotImplementedError

    def recent_results(self, workload, since, limit=5000):
        """[(received, score, us, correct)] of `workload`'s results received from `since` on, the
        newest `limit`, oldest first; correct is None where the result carried no truth."""
        raise NotImplementedError

    # -- retention (controller/fleet/retention.py) ---------------------------------------------------
    # Pruning a result leaves its (node, boot)'s floor behind: every seq at or below it counts as
    # stored (contiguous_results acknowledges past it, store_result stores it no more), so a late
    # re-delivery of a pruned result is neither stored twice nor left unacknowledged.

    def newest_times(self, table, n):
        """When the n-th newest row of `table` ("results" or "events") arrived, or None when it has
        fewer rows."""
        raise NotImplementedError

    def prune_results(self, before, limit):
        """Delete up to `limit` of the oldest results received before `before` (and their stream
        positions, but a lane's newest), raising their floors; the number deleted."""
        raise NotImplementedError

    def prune_events(self, before, limit):
        """Delete up to `limit` of the oldest events logged before `before`; the number deleted."""
        raise NotImplementedError

    # -- leadership among controller replicas (controller/fleet/leadership.py) --------------------
    # One row: who leads, under which fencing token, until when. Time is the registry's own
    # clock where it has one (PostgreSQL), so replicas on hosts with skewed clocks agree.

    def claim_leadership(self, holder, ttl_s):
        """Lead when nobody does or the lease ran out: the new fencing token, or None."""
        raise NotImplementedError

    def renew_leadership(self, holder, token, ttl_s):
        """Extend the lease `token` holds; False when it is stale (nothing else changes)."""
        raise NotImplementedError

    def check_leadership(self, holder, token):
        """True when `token` is still the current one, and keeps it so until this transaction
        ends (no other replica can claim meanwhile)."""
        raise NotImplementedError

    def leadership(self):
        """{holder, token, expires_in} of the current lease, or None."""
        raise NotImplementedError

    # -- the audit log ------------------------------------------------------------------------------

    def add_event(self, node_id, level, kind, msg, data=None, now=None):
        raise NotImplementedError

    def events(self, node_id=None, limit=50, kinds=None):
        """The newest `limit` events (of a node, of some kinds), oldest first."""
        raise NotImplementedError

    # -- the stream ledger (controller/fleet/ledger.py): stretches and accepted positions ----------

    def open_stretches(self, workload=None):
        """[(workload, lane, node, start)] of every open-ended stretch."""
        raise NotImplementedError

    def newest_stretch(self, workload, node):
        """(lane, start, until) of the newest stretch of `workload` owned by `node`, or None."""
        raise NotImplementedError

    def open_lane(self, workload, node):
        """The lane `node` owns open-ended, or None."""
        raise NotImplementedError

    def lane_marks(self, workload, lane):
        """(highest accepted position, highest stretch start), each None when there is none."""
        raise NotImplementedError

    def open_stretch(self, workload, lane, node, start):
        raise NotImplementedError

    def close_stretch(self, workload, lane, node, until):
        raise NotImplementedError

    def reopen_stretch(self, workload, lane, node, start):
        raise NotImplementedError

    def drop_stretch(self, workload, lane, node, start):
        raise NotImplementedError

    def owner_lane(self, workload, node, pos):
        """The lane in which `node` owns position `pos`, or None."""
        raise NotImplementedError

    def accept_position(self, workload, lane, pos, node, boot, seq):
        """True when the position was not accepted before (now it is)."""
        raise NotImplementedError

    def tracks(self, workload):
        raise NotImplementedError

    def accepted_by(self, workload, lane, pos):
        raise NotImplementedError

    def forget_streams(self, workload):
        raise NotImplementedError

    # -- what the reconciler keeps across controller restarts ---------------------------------------

    def set_resume(self, node_id, workload, pos):
        """The stream position a rebooted node resumes `workload` from (None: forget it)."""
        raise NotImplementedError

    def resume_positions(self):
        """{(node, workload): position}."""
        raise NotImplementedError

    def put_move(self, move):
        """A move in progress, as migration.Move.state_dict() gives it; keyed by (workload, lane)."""
        raise NotImplementedError

    def remove_move(self, workload, lane):
        raise NotImplementedError

    def moves(self):
        raise NotImplementedError

    def set_draining(self, node_id, draining):
        raise NotImplementedError

    def draining(self):
        """The set of nodes being drained."""
        raise NotImplementedError

    # -- telemetry history (controller/dashboard/history.py): what the dashboard's plots draw ------
    # One sample per (node, resolution in seconds, bucket start): the bucket's mean CPU (0..1),
    # free heap in bytes, battery percent and results per second, each None when unknown.

    def put_samples(self, samples):
        """Write (node, res, ts, cpu, mem_free, battery, rps) tuples; a bucket written again is replaced."""
        raise NotImplementedError

    def samples(self, node_id, res, since):
        """[(ts, cpu, mem_free, battery, rps)] of `node_id` at resolution `res` from `since` on, oldest first."""
        raise NotImplementedError

    def prune_samples(self, res, before):
        """Drop the samples at resolution `res` older than `before`; returns how many went."""
        raise NotImplementedError
