"""Fan-out of live updates from the controller's thread to the browsers' event streams.

The controller's thread calls publish() (never blocking: it must not wait on a slow browser);
each connected browser's stream is an asyncio queue on the web server's loop, fed with
call_soon_threadsafe. A browser that falls QUEUE_LIMIT updates behind is cut off (its stream
ends; the page reconnects and starts again from a fresh snapshot), so one stalled tab cannot
grow the controller's memory.
"""
import asyncio
import itertools
import json
import threading

QUEUE_LIMIT = 2000
CLOSED = None   # what a cut-off subscriber's queue receives last


class Subscriber:
    def __init__(self, loop):
        self.loop = loop
        self.queue = asyncio.Queue()
        self.dropped = False

    def _offer(self, line):
        if self.dropped:
            return
        if self.queue.qsize() >= QUEUE_LIMIT:
            self.dropped = True
            self.queue.put_nowait(CLOSED)
            return
        self.queue.put_nowait(line)


class Hub:
    def __init__(self):
        self._lock = threading.Lock()
        self._subscribers = set()
        self._ids = itertools.count(1)
        self.published = 0

    def subscribe(self, loop):
        sub = Subscriber(loop)
        with self._lock:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub):
        with self._lock:
            self._subscribers.discard(sub)

    def subscribers(self):
        with self._lock:
            return len(self._subscribers)

    def close_all(self):
        """End every browser's stream (the server is stopping: nothing keeps it waiting)."""
        with self._lock:
            subs, self._subscribers = list(self._subscribers), set()
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.queue.put_nowait, CLOSED)
            except RuntimeError:
                pass

    def publish(self, kind, data):
        """Send one update (`kind`: node, event, log, fleet, ...) to every browser; one SSE
        frame, serialized once here whatever the number of browsers."""
        with self._lock:
            subs = list(self._subscribers)
        if not subs:
            return
        frame = "id: %d\nevent: %s\ndata: %s\n\n" % (next(self._ids), kind, json.dumps(data, separators=(",", ":")))
        self.published += 1
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub._offer, frame)
            except RuntimeError:   # its loop closed (the server stopped)
                self.unsubscribe(sub)
