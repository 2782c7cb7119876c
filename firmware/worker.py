# An inference workload: reads its input stream, runs the model at the assigned rate and hands
# each result to the node. It beats (last_beat_ms) from inside the inference loop itself, so a
# stuck inference shows as a stale beat rather than hiding behind a healthy side task.
#
# Two kinds of model run here. In-process models (the MicroPython engine) are called directly.
# Isolated models (Linux nodes: a child process per worker) are served by
# firmware/procworker.py, which a microcontroller never loads.
import asyncio
import gc
import os

from .backends import open_model, top1
from .clock import ticks_add, ticks_diff, ticks_ms, ticks_us
from . import console, protocol
from .errors import FirmwareError, ProtocolError
from .outbox import OutboxError
from .sources import LIVE_WAIT_MS, open_source

# Where a board whose code is in ROM finds its models' .tflite files (romboot.MOUNT_POINT).
ROM_MODELS = "/rom/models"
# How often a worker that reached its hand-over point (input.until) looks for a later one.
HANDED_OVER_POLL_MS = 200

# Heap an MCU keeps free beside a model's arena, for messages and buffers.
ARENA_HEADROOM = 8192
# At boot, how long workers of an assignment cached on flash wait for the controller's word on
# where their streams resume (it answers the hello within a second when it is there).
BOOT_HOLD_MS = 3000


class InjectedFault(FirmwareError):
    """A fault an operator or a test asked for (firmware/faults.py); a crash like any other."""


def _refused_model(error):
    # The model itself cannot run here (bad file, unsupported op, too big, no backend): no restart
    # fixes that, so the workload fails for good and the controller places it elsewhere. A
    # process that died while loading is a crash, and is restarted.
    refused = getattr(error, "refused", None)   # WorkerProcessError says which it was
    return True if refused is None else refused


class InferenceWorker:
    """One workload's inference loop: a child of the node's workers supervisor. serve() is the
    child's body; a crash or a stale beat makes the supervisor restart it (kill() ends its
    process first); the input stream outlives restarts, so the workload continues where it was."""

    def __init__(self, spec, models_dir, emit, report_event=None, backend=None, arena_budget=None,
                 isolate=False, num_threads=1, runtime="cpython", node=None):
        self.spec = spec
        self.node = node   # what a live input source needs of the board (firmware/sources.py)
        self.id = spec["id"]
        self.models_dir = models_dir
        self.emit = emit
        self.report_event = report_event
        self.backend_name = backend
        self.arena_budget = arena_budget
        self.isolate = isolate
        self.num_threads = num_threads
        self.runtime = runtime   # the node's (its board profile's): which backends can run here
        self.state = "starting"
        self.n = 0
        self.err = None
        self.last_beat_ms = ticks_ms()
        self.child = None
        self.model = None
        self.source = None
        self.fault = None
        self.unfinished = None   # stream position of a batch read but not emitted (procworker)
        self.outputs = None      # firmware/outputs.py's reader, when the spec has an `output`

    @property
    def model_dir(self):
        return self.models_dir + "/" + self.spec["model"]

    def model_path(self):
        """The model's .tflite: on a board whose code is in ROM, the copy in the booted slot's
        ROM image (romboot mounts only that slot's segment, so it is the slot's own model), which
        the engine reads in place; otherwise, or when the image has none, the slot's file."""
        if self.runtime == "micropython":
            rom = ROM_MODELS + "/" + self.spec["model"] + "/model.tflite"
            try:
                os.stat(rom)
                return rom
            except OSError:
                pass
        return self.model_dir + "/model.tflite"

    async def open(self):
        """Start the model and the input stream; raises FirmwareError with a clear reason."""
        path = self.model_path()
        # A model file is read in one piece: collect first so a long-running board's
        # fragmented heap still has a block that size.
        if self.model is not None:
            return   # kept across a crash of the serving loop (kill())
        gc.collect()
        if self.isolate:
            from .procworker import ProcessModel
            self.model = await ProcessModel(path, self.backend_name, self.num_threads).start()
            self.backend_name = self.model.backend_name
        else:
            self.backend_name, self.model = open_model(path, self.backend_name, self.arena_budget, self.num_threads,
                                                         self.runtime)
        if self.source is None:
            self.source = open_source(self.spec["input"], self.model_dir, self.model, self.node, self.id)
        if self.outputs is None and "output" in self.spec:
            from .outputs import Outputs, class_names
            self.outputs = Outputs(self.spec["output"], self.model.output_quant, self.model.output_size,
                                   class_names(self.model_dir, self.spec["output"]))

    def read_outputs(self, outputs):
        """(label, score, fields the result adds) of one inference."""
        if self.outputs is None:
            label, score = top1(outputs, self.model.output_quant)
            return label, score, None
        return self.outputs.read(outputs)

    async def serve(self, child=None):
        """The supervised body: open, then infer until cancelled or crashed."""
        self.child = child
        self.state = "starting"
        if self.unfinished is not None and self.source is not None:
            self.source.pos = self.unfinished   # the batch a kill cut short is read again
            self.unfinished = None
        try:
            await self.open()
        except (FirmwareError, OSError, ValueError) as e:
            self.kill("hang")
            if not _refused_model(e):
                raise
            self.fail(e, "workload_failed")
            return
        while True:
            if not self.has_more():
                # Handed over (live migration): idle until the controller unassigns the
                # workload or moves the hand-over point on (an aborted move).
                self.state = "done"
                self.beat()
                await asyncio.sleep(HANDED_OVER_POLL_MS / 1000)
                continue
            self.state = "running"
            if self.isolate:
                from .procworker import serve_isolated
                await serve_isolated(self)
            else:
                await self._serve_in_process()

    def beat(self):
        self.last_beat_ms = ticks_ms()
        if self.child is not None:
            self.child.beat()

    def remaining(self):
        """Inputs left before the stream's hand-over point (input.until); None: unbounded."""
        until = self.spec["input"].get("until")
        if until is None or self.source is None:
            return None
        return until - self.source.pos

    def has_more(self):
        left = self.remaining()
        return left is None or left > 0

    def period_ms(self):
        return max(1, int(1000 / self.spec["rate"]))

    async def _serve_in_process(self):
        model, source = self.model, self.source
        inputs = bytearray(model.input_size)
        period_ms = self.period_ms()
        due = ticks_ms()
        while self.has_more():
            got = await source.next_into(inputs, LIVE_WAIT_MS)
            if got is None:   # a live source with nothing yet: alive, waiting
                self.beat()
                continue
            index, truth = got
            t0 = ticks_us()
            outputs = model.invoke(inputs)
            elapsed_us = ticks_diff(ticks_us(), t0)
            label, score, fields = self.read_outputs(outputs)
            self.n += 1
            self.beat()
            self.emit(self, label, score, elapsed_us, truth, index, fields)
            if self.fault is not None:
                await self.injected_fault()
            if source.live:   # its inputs pace the worker
                await asyncio.sleep(0)
                continue
            due = ticks_add(due, period_ms)
            delay = ticks_diff(due, ticks_ms())
            if delay < 0:
                # Fell behind (slow board): run at the board's pace instead of bursting.
                due = ticks_ms()
                delay = 0
            await asyncio.sleep(delay / 1000)

    async def injected_fault(self):
        fault = self.fault
        if fault != "crashloop":   # a crash loop crashes every (re)start until reassigned
            self.fault = None
        if fault == "raise" or fault == "crashloop":
            raise InjectedFault("injected crash in workload %s" % self.id)
        if fault == "hang":
            if self.isolate:
                await self.model.hang()   # the inference process spins; collect() never returns
            # A livelock: the loop keeps yielding but never beats again.
            while True:
                await asyncio.sleep(0.05)

    def fail(self, error, kind):
        self.state = "failed"
        self.err = "%s: %s" % (type(error).__name__, error)
        if self.report_event is not None:
            self.report_event(self, kind, self.err)

    def kill(self, how="stop"):
        """The supervisor's kill hook. After a crash of this loop the model is kept for the restart
        where it is sound (an inference process still alive with no batch half done): a crash
        costs a restart of the loop, not of the interpreter. A hang, or a dead process, ends it."""
        model = self.model
        if model is None:
            return
        if how == "crash" and getattr(model, "reusable", True) is True:
            return
        if hasattr(model, "kill"):
            model.kill()
        self.model = None

    def stop(self):
        self.kill()
        self.state = "stopped"
        if self.source is not None:
            self.source.close()
            self.source = None

    def report(self):
        state = self.state
        child = self.child
        restarts = 0
        if child is not None:
            restarts = child.restarts
            if child.state == "backoff":
                state = "restarting"
            elif child.state == "failed":
                state = "given_up"
        out = {"id": self.id, "state": state, "n": self.n, "err": self.err if self.err is not None else (
            child.last_error if child is not None else None), "restarts": restarts}
        stream = getattr(self.source, "report", None)   # a live source's own figures (topic)
        if stream is not None:
            out.update(stream())
        return out


def start(node, spec):
    """Start a worker for `spec` under the node's workers supervisor (Node.start_worker: the code
    lives here, loaded with the first workload, not in the node's heap from boot)."""
    from .supervisor import TRANSIENT, Child
    # Linux nodes run each model in its own process (a native crash kills only that);
    # an MCU has one process, so its engine runs in the node's event loop.
    isolate = node.runtime == "cpython" and node.cfg.get("isolate_workers", True)
    # The engine refuses (ModelTooLarge, naming both numbers) an arena the heap cannot
    # hold beside what this node already runs, rather than failing later mid-inference.
    budget = max(0, node.hal.mem()[0] - ARENA_HEADROOM) if node.runtime == "micropython" else None
    assigned = spec
    prev = node.workers.get(spec["id"])
    if prev is not None and prev.source is not None and prev.assigned == spec:
        # The same stream restarted for the worker's own reasons (the workers supervisor came
        # back): it goes on from where it was, not from the assignment's start.
        spec = dict(spec)
        spec["input"] = dict(spec["input"])
        spec["input"]["start"] = prev.source.pos
        prev.stop()
    worker = InferenceWorker(spec, node.models_dir, lambda w, *result: emit_result(node, w, *result),
                             lambda w, kind, detail: report_failure(node, w, kind, detail), arena_budget=budget,
                             isolate=isolate, num_threads=node.cfg.get("num_threads", 1), runtime=node.runtime, node=node)
    worker.assigned = assigned
    node.workers[spec["id"]] = worker
    sup = node.sup_cfg
    # Transient: a model this board cannot run ends the worker normally, for good; a crash
    # or a hang restarts it.
    node.workers_sup.start_child(Child(
        spec["id"], worker.serve, restart=TRANSIENT, beat_timeout_ms=max(sup["worker_beat_ms"], 3 * worker.period_ms()),
        start_timeout_ms=sup["worker_start_ms"], kill=worker.kill))


async def hold_for_resume(node, child):
    """Booted with the assignment cached on flash: its start positions are as old as the
    assignment. The controller answers the boot's hello with where each stream resumes; wait
    for that a moment (not longer: offline, the node runs what it has)."""
    waited = 0
    node.holding = True
    while node.held_from_cache and waited < BOOT_HOLD_MS:
        child.beat()
        await asyncio.sleep(0.05)
        waited += 50
    node.held_from_cache = node.holding = False


def emit_result(node, worker, label, score, elapsed_us, truth, index, fields=None):
    """A worker's result: numbered in the node's boot and appended to its flash outbox; and a
    crossing of the workload's watched output told (firmware/outputs.py)."""
    node.result_seq += 1
    msg = {"v": protocol.VERSION, "node": node.id, "boot": node.boot, "seq": node.result_seq,
           "wl": worker.id, "up": node.uptime_ms(), "label": label, "score": round(score, 5),
           "us": elapsed_us, "in": index}
    if truth is not None:
        msg["truth"] = truth
    if fields:
        msg.update(fields)
    if worker.outputs is not None and worker.outputs.changed is not None:
        crossed(node, worker, index)
    try:
        node.outbox.append("result", node.boot, node.result_seq, protocol.encode("result", msg))
    except OutboxError as e:
        node.outbox_failed(e)
    except MemoryError as e:
        # The record stays buffered (or, if even that failed, is counted as dropped); the
        # workload itself must not die of the outbox's trouble.
        node.outbox_failed(OutboxError("out of heap: %s" % e))
    except ProtocolError as e:
        console.say("edgefleet-node: dropping bad result: %s" % e)


def crossed(node, worker, index):
    """The watched output crossed its threshold with this result: an event, and the pin."""
    outputs = worker.outputs
    value = round(outputs.value, 5)
    if outputs.changed:
        node.event("warn", "threshold", "%s: %s (%g at input %d)" % (worker.id, outputs.describe(), value, index),
                   {"wl": worker.id, "in": index, "index": outputs.index, "value": value})
    else:
        node.event("info", "threshold_clear", "%s: %s no more (%g at input %d)" % (
            worker.id, outputs.describe(), value, index), {"wl": worker.id, "in": index, "index": outputs.index,
                                                           "value": value})
    if outputs.pin is not None:
        try:
            node.hal.pin_out(outputs.pin, outputs.changed)
        except OSError as e:
            node.event("error", "pin_failed", "%s: pin %d: %s" % (worker.id, outputs.pin, e), {"wl": worker.id})


def report_failure(node, worker, kind, detail):
    node.event("error", kind, "%s: %s" % (worker.id, detail), {"wl": worker.id, "model": worker.spec["model"]})
