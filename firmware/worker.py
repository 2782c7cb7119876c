# An inference workload: reads its input stream, runs the model at the assigned rate and hands
# each result to the node. It beats (last_beat_ms) from inside the inference loop itself, so a
# stuck inference shows as a stale beat rather than hiding behind a healthy side task.
import asyncio

from .backends import open_model, top1
from .clock import ticks_add, ticks_diff, ticks_ms, ticks_us
from .errors import FirmwareError
from .sources import open_source


class InferenceWorker:
    def __init__(self, spec, models_dir, emit, backend=None, arena_budget=None):
        self.spec = spec
        self.id = spec["id"]
        self.models_dir = models_dir
        self.emit = emit
        self.backend_name = backend
        self.arena_budget = arena_budget
        self.state = "starting"
        self.n = 0
        self.err = None
        self.last_beat_ms = ticks_ms()
        self.task = None
        self.model = None
        self.source = None

    def load(self):
        """Open the model and the input stream; raises FirmwareError with a clear reason."""
        model_dir = self.models_dir + "/" + self.spec["model"]
        self.backend_name, self.model = open_model(model_dir + "/model.tflite", self.backend_name, self.arena_budget)
        self.source = open_source(self.spec["input"], model_dir, self.model.input_size)

    async def run(self):
        try:
            if self.model is None:
                self.load()
        except (FirmwareError, OSError, ValueError) as e:
            self.fail(e)
            return
        inputs = bytearray(self.model.input_size)
        period_ms = max(1, int(1000 / self.spec["rate"]))
        due = ticks_ms()
        self.state = "running"
        try:
            while True:
                index, truth = self.source.read_into(inputs)
                t0 = ticks_us()
                outputs = self.model.invoke(inputs)
                elapsed_us = ticks_diff(ticks_us(), t0)
                label, score = top1(outputs, self.model.output_quant)
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
        except asyncio.CancelledError:
            self.state = "stopped"
            raise
        except (FirmwareError, OSError, ValueError, MemoryError) as e:
            self.fail(e)

    def fail(self, error):
        self.state = "failed"
        self.err = "%s: %s" % (type(error).__name__, error)

    def start(self):
        self.task = asyncio.create_task(self.run())
        return self.task

    def stop(self):
        if self.task is not None:
            self.task.cancel()
        self.state = "stopped"
        if self.source is not None:
            self.source.close()
            self.source = None

    def report(self):
        return {"id": self.id, "state": self.state, "n": self.n, "err": self.err}
