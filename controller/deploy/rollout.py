"""Rollouts (docs/ota.md): a bundle goes to a group of nodes in waves - a canary first, then
batches - and each wave must prove itself on inference health, not only "installed", before the
next one starts. A failing wave stops the rollout and is rolled back.

Pure logic, like controller/fleet/controller.py: `handle()` takes a node's message, `tick()` the time, and
both return the `ota` messages to send as (node, message) pairs; controller/deploy/deployer.py is the
MQTT shell around it.
"""
import base64
import math

from edgefleet.firmware import protocol

CHUNK_BYTES = 1536
# The smallest chunk a node may ask for (ota_state `chunk`): below it the messages' own bytes
# would outweigh the bundle's.
MIN_CHUNK_BYTES = 256
# Chunks a transfer keeps in flight: a round trip through the broker and an MCU's flash write
# per chunk would otherwise set the pace.
WINDOW = 6
# With no progress this long, the begin is sent again; the node answers with its offset.
RESEND_S = 2.0


def ota_msg(bundle_id, op, **fields):
    msg = {"v": protocol.VERSION, "id": bundle_id, "op": op}
    msg.update(fields)
    return msg


class Transfer:
    """One node's bundle stream: in order, up to `window` chunks in flight, resumed from the
    offset the node reports. Every accepted chunk is acknowledged with the node's new offset;
    with no progress for RESEND_S the begin goes again, and its answer says where to go on.

    status: sending -> switching (all bytes in, node verified and switched) -> confirmed, or
    failed (rejected, reverted, abandoned) with `error`."""

    def __init__(self, node, data, bundle_id, version, window_ms, chunk=CHUNK_BYTES, window=WINDOW):
        self.node = node
        self.data = data
        self.id = bundle_id
        self.version = version
        self.window_ms = window_ms
        self.chunk = chunk
        self.window = window
        self.status = "sending"
        self.error = None
        self.acked = 0          # the node's offset, as last reported
        self.next_off = 0       # the next chunk to send
        self.waiting = False    # a begin (or chunks) are out and unanswered
        self.progress_at = 0.0
        self.asked = False      # a begin went out and its answer has not come
        self.bytes_sent = 0

    def begin(self, now):
        self.waiting, self.asked, self.progress_at = True, True, now
        return [(self.node, ota_msg(self.id, "begin", size=len(self.data), ver=self.version,
                                    window_ms=self.window_ms))]

    def _fill(self, now):
        out = []
        while self.next_off < len(self.data) and self.next_off - self.acked < self.window * self.chunk:
            piece = self.data[self.next_off:self.next_off + self.chunk]
            out.append((self.node, ota_msg(self.id, "chunk", off=self.next_off,
                                           data=base64.b64encode(piece).decode())))
            self.next_off += len(piece)
            self.bytes_sent += len(piece)
        if out:
            self.waiting = True
        return out

    def on_state(self, msg, now):
        state = msg["state"]
        if state == "receiving" and self.status == "sending":
            asked = msg.get("chunk")
            if asked is not None:
                # A node short of heap asks for smaller chunks; never larger ones than ours.
                self.chunk = max(MIN_CHUNK_BYTES, min(self.chunk, asked))
            off = msg["off"]
            if off > self.acked:
                self.acked, self.progress_at, self.asked = off, now, False
                self.next_off = max(self.next_off, off)
                return self._fill(now)
            if self.asked and off == self.acked:
                # The answer to a begin: the node is at `off`; what was in flight beyond it is
                # lost (a dropped link) and goes again.
                self.asked, self.progress_at, self.next_off = False, now, off
                return self._fill(now)
            # Otherwise a stale answer (to chunks an earlier deployer sent) or a duplicate
            # chunk's: the node's offset does not move backwards, so nothing to do.
            return []
        if state == "idle" and self.status == "sending":
            self.acked = self.next_off = 0
            return self.begin(now)   # the node lost the stream (it rebooted): start over
        if state == "switching":
            self.status, self.acked, self.waiting = "switching", len(self.data), False
        elif state in ("current", "confirmed") and msg.get("ver", self.version) == self.version:
            self.status, self.waiting = "confirmed", False
        elif state in ("rejected", "reverted", "abandoned"):
            self.status, self.waiting = "failed", False
            self.error = "%s: %s" % (state, msg.get("err") or "no reason given")
        return []

    def on_reboot(self, now):
        """The node booted again (hello with a new boot number)."""
        if self.status == "sending":
            self.acked = self.next_off = 0
            return self.begin(now)
        return []

    def tick(self, now):
        if self.status == "sending" and self.waiting and now - self.progress_at > RESEND_S:
            return self.begin(now)   # lost messages or node: ask where it is
        return []

    def progress(self):
        return len(self.data) if self.status != "sending" else self.acked


class Gate:
    """What a wave must show, after every node in it confirmed, over `soak_s` seconds.

    error rate: the share of the wave's workloads that report failed or an error in heartbeats;
    latency: the mean inference time of the results the wave delivered (us)."""

    def __init__(self, soak_s=3.0, max_error_rate=0.0, max_latency_us=None, min_results=1):
        self.soak_s = soak_s
        self.max_error_rate = max_error_rate
        self.max_latency_us = max_latency_us
        self.min_results = min_results

    def verdict(self, stats):
        """None if the wave passes, else why not."""
        if stats["workloads"] and stats["failed"] / stats["workloads"] > self.max_error_rate:
            return "error rate %.2f over %.2f (%d of %d workloads failing)" % (
                stats["failed"] / stats["workloads"], self.max_error_rate, stats["failed"], stats["workloads"])
        if stats["results"] < self.min_results and stats["workloads"]:
            return "only %d results in the soak period" % stats["results"]
        if self.max_latency_us is not None and stats["results"]:
            mean = stats["us"] / stats["results"]
            if mean > self.max_latency_us:
                return "mean latency %.0f us over %.0f us" % (mean, self.max_latency_us)
        return None


def plan_waves(nodes, canary=1, batch=None):
    """[[canary nodes], [batch], ...]: the canary first, then batches (default: the rest in two)."""
    nodes = list(nodes)
    if not nodes:
        return []
    canary = max(1, min(canary, len(nodes)))
    waves = [nodes[:canary]]
    rest = nodes[canary:]
    if rest:
        batch = batch or max(1, math.ceil(len(rest) / 2))
        for i in range(0, len(rest), batch):
            waves.append(rest[i:i + batch])
    return waves


class Rollout:
    """status: running -> done, or running -> rolling_back -> failed (with `error`)."""

    def __init__(self, data, bundle_id, version, nodes, canary=1, batch=None, gate=None, window_ms=30000,
                 wave_timeout_s=120.0, rollback_failed_wave=True):
        self.data = data
        self.id = bundle_id
        self.version = version
        self.waves = plan_waves(nodes, canary, batch)
        self.gate = gate or Gate()
        self.window_ms = window_ms
        self.wave_timeout_s = wave_timeout_s
        self.rollback_failed_wave = rollback_failed_wave
        self.wave = -1
        self.status = "running"
        self.error = None
        self.transfers = {}
        self.wave_started = 0.0
        self.soak_from = None
        self.stats = None
        self.boots = {}
        self.rollback_pending = {}   # node -> boot at which the rollback was asked
        self.rolled_back = set()
        self.failed_at = None
        self.rolled_back_at = None
        self.log = []

    @property
    def nodes(self):
        return [n for wave in self.waves for n in wave]

    def start(self, now):
        return self._next_wave(now)

    def _next_wave(self, now):
        self.wave += 1
        if self.wave >= len(self.waves):
            self.status = "done"
            self.log.append((now, "all %d waves healthy on %s" % (len(self.waves), self.version)))
            return []
        self.wave_started, self.soak_from = now, None
        self.stats = {"workloads": 0, "failed": 0, "results": 0, "us": 0}
        out = []
        for node in self.waves[self.wave]:
            t = Transfer(node, self.data, self.id, self.version, self.window_ms)
            self.transfers[node] = t
            out.extend(t.begin(now))
        self.log.append((now, "wave %d/%d: %s" % (self.wave + 1, len(self.waves), ", ".join(self.waves[self.wave]))))
        return out

    def _wave_nodes(self):
        return self.waves[self.wave] if 0 <= self.wave < len(self.waves) else []

    # -- messages from nodes --------------------------------------------------------------

    def handle(self, node, kind, msg, now):
        if kind == "hb":
            self.boots[node] = max(self.boots.get(node, 0), msg["boot"])
        if kind == "hello":
            return self._on_hello(node, msg, now)
        if kind == "ota_state":
            t = self.transfers.get(node)
            if self.status == "rolling_back":
                if msg["state"] in ("rolledback", "rejected") and node in self.rollback_pending:
                    if msg["state"] == "rejected":   # nothing to roll back to: it runs what it ran
                        self._rolled_back(node, now)
                return []
            if t is None or msg["id"] != self.id or self.status != "running":
                return []
            before = t.status
            out = t.on_state(msg, now)
            if t.status != before:
                self.log.append((now, "%s %s%s" % (node, t.status, ": " + t.error if t.error else "")))
            return out + self._check_wave(now)
        if kind == "hb" and self.status == "running" and self.soak_from is not None and node in self._wave_nodes():
            if msg["boot"] >= self.boots.get(node, 0):
                self._soak_hb(msg)
        elif kind == "hb" and self.status == "rolling_back" and node in self.rollback_pending:
            if msg["boot"] > self.rollback_pending[node] and all(w["state"] == "running" and w["n"] > 0 for w in msg["wl"]):
                self._rolled_back(node, now)
        elif kind == "result" and self.status == "running" and self.soak_from is not None and node in self._wave_nodes():
            self.stats["results"] += 1
            self.stats["us"] += msg["us"]
        return []

    def _on_hello(self, node, msg, now):
        self.boots[node] = max(self.boots.get(node, 0), msg["boot"])
        t = self.transfers.get(node)
        if t is not None and self.status == "running":
            return t.on_reboot(now)
        return []

    def _soak_hb(self, msg):
        self.stats["workloads"] += len(msg["wl"])
        self.stats["failed"] += sum(1 for w in msg["wl"] if w["state"] == "failed" or w["err"])

    def _rolled_back(self, node, now):
        self.rollback_pending.pop(node, None)
        self.rolled_back.add(node)
        if not self.rollback_pending:
            self.status = "failed"
            self.rolled_back_at = now
            self.log.append((now, "wave %d rolled back" % (self.wave + 1)))

    # -- time -----------------------------------------------------------------------------

    def tick(self, now):
        out = []
        if self.status == "running":
            for node in self._wave_nodes():
                out.extend(self.transfers[node].tick(now))
            out.extend(self._check_wave(now))
        elif self.status == "rolling_back" and now - self.failed_at > self.wave_timeout_s:
            self.status = "failed"
            self.error += "; rollback unconfirmed on %s" % ", ".join(sorted(self.rollback_pending))
        return out

    def _check_wave(self, now):
        if self.status != "running":
            return []
        wave = [self.transfers[n] for n in self._wave_nodes()]
        failed = [t for t in wave if t.status == "failed"]
        if failed:
            return self._fail(now, "; ".join("%s %s" % (t.node, t.error) for t in failed))
        if now - self.wave_started > self.wave_timeout_s:
            late = [t.node for t in wave if t.status != "confirmed"]
            if late:
                return self._fail(now, "not confirmed within %.0f s: %s" % (self.wave_timeout_s, ", ".join(late)))
        if any(t.status != "confirmed" for t in wave):
            return []
        if self.soak_from is None:
            self.soak_from = now
            self.log.append((now, "wave %d confirmed; soaking %.1f s" % (self.wave + 1, self.gate.soak_s)))
            return []
        if now - self.soak_from < self.gate.soak_s:
            return []
        why = self.gate.verdict(self.stats)
        if why is not None:
            return self._fail(now, "health gate: " + why)
        return self._next_wave(now)

    def _fail(self, now, why):
        self.error = "wave %d/%d failed: %s" % (self.wave + 1, len(self.waves), why)
        self.failed_at = now
        self.log.append((now, self.error))
        if not self.rollback_failed_wave:
            self.status = "failed"
            return []
        self.status = "rolling_back"
        out = []
        for node in self._wave_nodes():
            t = self.transfers[node]
            if t.status in ("switching", "confirmed"):
                self.rollback_pending[node] = self.boots.get(node, 0)
                out.append((node, ota_msg(self.id, "rollback")))
            elif t.status == "sending":
                out.append((node, ota_msg(self.id, "abort")))
        if not self.rollback_pending:
            self.status = "failed"
            self.rolled_back_at = now
        return out

    # -- views ----------------------------------------------------------------------------

    def progress(self):
        total = len(self.data) * len(self.nodes)
        done = sum(t.progress() for t in self.transfers.values())
        confirmed = sum(1 for t in self.transfers.values() if t.status == "confirmed")
        return {"status": self.status, "wave": self.wave + 1, "waves": len(self.waves), "bytes": done,
                "bytes_total": total, "confirmed": confirmed, "nodes": len(self.nodes), "error": self.error}
