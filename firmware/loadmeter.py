# CPU load of a node whose only "process" is its asyncio event loop: the share of wall time
# the loop spends running tasks instead of waiting for I/O or timers. It wraps the loop's
# single blocking wait (MicroPython: IOQueue.wait_io_event; CPython: the selector's select).
from .clock import ticks_diff, ticks_us


class LoadMeter:
    def __init__(self):
        self.idle_us = 0
        self._mark_us = ticks_us()
        self._mark_idle = 0
        self.installed = False

    def _timed(self, wait):
        meter = self

        def timed_wait(*args):
            t0 = ticks_us()
            try:
                return wait(*args)
            finally:
                meter.idle_us += ticks_diff(ticks_us(), t0)

        return timed_wait

    def install(self):
        """Hook the running event loop's wait; call from inside a running task."""
        import asyncio
        core = getattr(asyncio, "core", None)
        queue = getattr(core, "_io_queue", None) if core is not None else None
        if queue is not None and hasattr(queue, "wait_io_event"):
            queue.wait_io_event = self._timed(queue.wait_io_event)
            self.installed = True
            return True
        loop = asyncio.get_event_loop()
        selector = getattr(loop, "_selector", None)
        if selector is not None:
            selector.select = self._timed(selector.select)
            self.installed = True
        return self.installed

    def sample(self):
        """Busy percent since the previous sample."""
        now = ticks_us()
        wall = ticks_diff(now, self._mark_us)
        idle = self.idle_us - self._mark_idle
        self._mark_us, self._mark_idle = now, self.idle_us
        if wall <= 0:
            return 0.0
        busy = 100.0 * (wall - idle) / wall
        return round(min(100.0, max(0.0, busy)), 1)
