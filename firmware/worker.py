# An inference workload: reads its input stream, runs the model at the assigned rate and hands
# each result to the node. It beats (last_beat_ms) from inside the inference loop itself, so a
# stuck inference shows as a stale beat rather than hiding behind a healthy side task.
#
# Two kinds of model run here. In-process models (the MicroPython engine) are called directly.
# Isolated models (Linux nodes: a child process per worker) are served by
# firmware/procworker.py, which a microcontroller never loads.
import asyncio
import gc

from .backends import open_model, top1
from .clock import ticks_add, ticks_diff, ticks_ms, ticks_us
from .errors import FirmwareError
from .sources import open_source

RESTART_MIN_MS = 500
RESTART_MAX_MS = 8000
# How often a worker that reached its hand-over point (input.until) looks for a later one.
HANDED_OVER_POLL_MS = 200


class InferenceWorker:
    def __init__(self, spec, models_dir, emit, report_event=None, backend=None, arena_budget=None,
                 isolate=False, num_threads=1):
        self.spec = spec
        self.id = spec["id"]
        self.models_dir = models_dir
        self.emit = emit
        self.report_event = report_event
        self.backend_name = backend
        self.arena_budget = arena_budget
        self.isolate = isolate
        self.num_threads = num_threads
        self.state = "starting"
        self.n = 0
        self.err = None
        self.restarts = 0
        self.last_beat_ms = ticks_ms()
        self.task = None
        self.model = None
        self.source = None

    @property
    def model_dir(self):
        return self.models_dir + "/" + self.spec["model"]

    async def open(self):
        """Start the model and the input stream; raises FirmwareError with a clear reason."""
        path = self.model_dir + "/model.tflite"
        # A model file is read in one piece: collect first so a long-running board's
        # fragmented heap still has a block that size.
        gc.collect()
        if self.isolate:
            from .procworker import ProcessModel
            self.model = await ProcessModel(path, self.backend_name, self.num_threads).start()
            self.backend_name = self.model.backend_name
        else:
            self.backend_name, self.model = open_model(path, self.backend_name, self.arena_budget, self.num_threads)
        if self.source is None:
            self.source = open_source(self.spec["input"], self.model_dir, self.model.input_size)

    async def run(self):
        try:
            await self.open()
        except (FirmwareError, OSError, ValueError, MemoryError) as e:
            self.fail(e, "workload_failed")
            return
        backoff = RESTART_MIN_MS
        while True:
            try:
                if not self.has_more():
                    # Handed over (live migration): idle until the controller unassigns the
                    # workload or moves the hand-over point on (an aborted move).
                    self.state = "done"
                    await asyncio.sleep(HANDED_OVER_POLL_MS / 1000)
                    continue
                self.state = "running"
                if self.isolate:
                    from .procworker import serve_isolated
                    await serve_isolated(self)
                else:
                    await self._serve_in_process()
            except asyncio.CancelledError:
                self.state = "stopped"
                raise
            except (FirmwareError, OSError, ValueError, MemoryError) as e:
                if not self.isolate:
                    self.fail(e, "workload_failed")
                    return
                # The inference process died (a native crash, a kill): start a fresh one.
                self.restarts += 1
                self.fail(e, "worker_crashed")
                await asyncio.sleep(backoff / 1000)
                backoff = min(backoff * 2, RESTART_MAX_MS)
                try:
                    await self.open()
                except (FirmwareError, OSError, ValueError, MemoryError) as e2:
                    self.fail(e2, "workload_failed")
                    return

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
            index, truth = source.read_into(inputs)
            t0 = ticks_us()
            outputs = model.invoke(inputs)
            elapsed_us = ticks_diff(ticks_us(), t0)
            label, score = top1(outputs, model.output_quant)
            self.n += 1
            self.last_beat_ms = ticks_ms()
            self.emit(self, label, score, elapsed_us, truth, index)
            due = ticks_add(due, period_ms)
            delay = ticks_diff(due, ticks_ms())
            if delay < 0:
                # Fell behind (slow board): run at the board's pace instead of bursting.
                due = ticks_ms()
                delay = 0
            await asyncio.sleep(delay / 1000)

    def fail(self, error, kind):
        self.state = "failed"
        self.err = "%s: %s" % (type(error).__name__, error)
        if self.report_event is not None:
            self.report_event(self, kind, self.err)

    def start(self):
        self.task = asyncio.create_task(self.run())
        return self.task

    def stop(self):
        if self.task is not None:
            self.task.cancel()
        self.state = "stopped"
        if self.model is not None and hasattr(self.model, "kill"):
            self.model.kill()
        if self.source is not None:
            self.source.close()
            self.source = None

    def report(self):
        return {"id": self.id, "state": self.state, "n": self.n, "err": self.err}
