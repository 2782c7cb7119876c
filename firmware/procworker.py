# Linux nodes only: a model that runs in its own OS process (firmware/inference_child.py).
#
# A native interpreter (LiteRT, tflite-runtime) that segfaults or is killed takes only its
# child process down; the agent sees the pipe close, reports it and starts a new child.
import asyncio
import json
import struct
import sys

from .errors import FirmwareError
from .clock import ticks_add, ticks_diff, ticks_ms
from .inference_child import ERROR, HANG, HEADER, INFER, OUTPUTS, READY
from .sources import LIVE_WAIT_MS

# Most inputs sent to an isolated model in one round trip.
MAX_BATCH = 32


class WorkerProcessError(FirmwareError):
    """The inference process failed to start, died, or answered nonsense; `refused` when it
    answered that the model cannot be loaded at all (restarting will not help)."""

    def __init__(self, message, returncode=None, refused=False):
        super().__init__(message)
        self.returncode = returncode
        self.refused = refused


class ProcessModel:
    def __init__(self, path, backend=None, num_threads=1, start_timeout=30.0):
        self.path = path
        self.backend = backend
        self.num_threads = num_threads
        self.start_timeout = start_timeout
        self.proc = None
        self.input_size = self.output_size = 0
        self.input_quant = self.output_quant = (1.0, 0)
        self.input_shape = []
        self.backend_name = None
        self.in_flight = 0   # batches submitted and not yet collected

    @property
    def reusable(self):
        """Alive and between batches: a new serving loop can take over this process."""
        return self.proc is not None and self.proc.returncode is None and self.in_flight == 0

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    async def start(self):
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __package__ + ".inference_child", self.path, self.backend or "",
            str(self.num_threads), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            kind, _, payload = await asyncio.wait_for(self._read_frame(), self.start_timeout)
        except asyncio.TimeoutError:
            self.kill()
            raise WorkerProcessError("inference process for %s did not start in %.0f s" % (self.path, self.start_timeout))
        if kind == ERROR:
            await self._reap()
            raise WorkerProcessError("cannot load %s: %s" % (self.path, payload.decode(errors="replace")), refused=True)
        if kind != READY:
            self.kill()
            raise WorkerProcessError("inference process sent frame %d before READY" % kind)
        meta = json.loads(payload)
        self.backend_name = meta["backend"]
        self.input_size, self.output_size = meta["input_size"], meta["output_size"]
        self.input_shape = meta["input_shape"]
        self.input_quant, self.output_quant = tuple(meta["input_quant"]), tuple(meta["output_quant"])
        return self

    async def _read_frame(self):
        try:
            header = await self.proc.stdout.readexactly(HEADER.size)
            kind, count, length = HEADER.unpack(header)
            payload = await self.proc.stdout.readexactly(length)
        except asyncio.IncompleteReadError:
            code = await self._reap()
            raise WorkerProcessError("inference process exited (code %s)" % code, code)
        return kind, count, payload

    async def submit(self, payload, count):
        """Send `count` inputs packed back to back; results come, in order, from collect()."""
        if self.proc is None:
            raise WorkerProcessError("inference process was never started")
        if self.proc.returncode is not None:
            code = self.proc.returncode
            raise WorkerProcessError("inference process exited (code %s)" % code, code)
        try:
            self.in_flight += 1
            self.proc.stdin.write(HEADER.pack(INFER, count, len(payload)))
            self.proc.stdin.write(payload)
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            code = await self._reap()
            raise WorkerProcessError("inference process exited (code %s)" % code, code)

    async def collect(self):
        """The results of the oldest submitted batch: (raw int8 outputs, latencies in us)."""
        kind, count, body = await self._read_frame()
        self.in_flight -= 1
        out_bytes = count * self.output_size
        if kind != OUTPUTS or len(body) != out_bytes + 4 * count:
            self.kill()
            raise WorkerProcessError("inference process answered frame %d with %d bytes" % (kind, len(body)))
        return body[:out_bytes], struct.unpack("<%dI" % count, body[out_bytes:])

    async def invoke_batch(self, payload, count):
        await self.submit(payload, count)
        return await self.collect()

    async def _reap(self):
        if self.proc is None:
            return None
        try:
            return await asyncio.wait_for(self.proc.wait(), 5)
        except asyncio.TimeoutError:
            self.kill()
            return await self.proc.wait()

    def kill(self):
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    def signal(self, signum):
        """Deliver a signal to the inference process (fault injection: SIGKILL, SIGSEGV)."""
        if self.proc is None or self.proc.returncode is not None:
            raise WorkerProcessError("inference process is not running")
        import os
        os.kill(self.proc.pid, signum)

    async def hang(self):
        """Fault injection: the inference process spins in an endless loop from now on."""
        self.proc.stdin.write(HEADER.pack(HANG, 0, 0))
        await self.proc.stdin.drain()

    async def close(self):
        if self.proc is not None and self.proc.returncode is None:
            self.proc.stdin.close()
            await self._reap()


# The serving loop of an isolated worker (firmware/worker.py): every input that is due goes to
# the inference process in one round trip, so a worker that fell behind catches up at the
# process hop's cost once per batch rather than once per input.
async def serve_isolated(worker):
    model, source = worker.model, worker.source
    in_size, out_size = model.input_size, model.output_size
    batch = bytearray(MAX_BATCH * in_size)
    view = memoryview(batch)
    meta = [None] * MAX_BATCH
    period_ms = worker.period_ms()
    due = ticks_ms()
    while True:
        late_ms = ticks_diff(ticks_ms(), due)
        count = min(MAX_BATCH, 1 + max(0, late_ms) // period_ms)
        left = worker.remaining()
        if left is not None:
            if left <= 0:
                return  # the stream's hand-over point: the worker idles (worker.run)
            count = min(count, left)
        # Read but not yet emitted: a worker killed in the batch (a hang, a frozen board) reads
        # these inputs again when it restarts, rather than skipping them.
        worker.unfinished = source.pos
        got = await source.next_into(view[0:in_size], LIVE_WAIT_MS)
        if got is None:   # a live source with nothing yet: alive, waiting
            worker.unfinished = None
            worker.beat()
            continue
        meta[0] = got
        if source.live:
            count = min(count, 1 + source.waiting())
        for i in range(1, count):
            meta[i] = await source.next_into(view[i * in_size:(i + 1) * in_size])
        outputs, latencies = await model.invoke_batch(bytes(view[:count * in_size]), count)
        worker.beat()
        for i in range(count):
            label, score, fields = worker.read_outputs(outputs[i * out_size:(i + 1) * out_size])
            worker.n += 1
            worker.emit(worker, label, score, latencies[i], meta[i][1], meta[i][0], fields)
        worker.unfinished = None
        if worker.fault is not None:
            await worker.injected_fault()
        if source.live:   # its inputs pace the worker
            due = ticks_ms()
            await asyncio.sleep(0)
            continue
        due = ticks_add(due, count * period_ms)
        delay = ticks_diff(due, ticks_ms())
        if delay < -MAX_BATCH * period_ms:
            due = ticks_ms()  # hopelessly behind: drop the backlog of due inputs
            delay = 0
        await asyncio.sleep(max(0, delay) / 1000)
