# ticks_ms on both runtimes, and a task that counts how often the event loop lets it run: a test's proof that code it awaits
# does not block the loop (firmware tests only).
import asyncio

try:
    from time import ticks_diff, ticks_ms
except ImportError:   # CPython
    from time import monotonic

    def ticks_ms():
        return int(monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


class Ticker:
    def __init__(self, every_s=0.005):
        self.every_s = every_s
        self.ticks = 0
        self._task = None

    async def _run(self):
        while True:
            await asyncio.sleep(self.every_s)
            self.ticks += 1

    def start(self):
        self._task = asyncio.create_task(self._run())

    def stop(self):
        self._task.cancel()
