# Erlang/OTP-style supervision of the node's tasks, in the MicroPython/CPython common subset.
#
# A supervisor starts its children in order and watches them. A child that ends is restarted or
# not by its restart type (permanent: always; transient: only after a crash; temporary: never),
# after an exponential backoff with jitter that resets once the restarted child has beaten.
# one_for_one restarts only the child that failed; rest_for_one also restarts every child
# started after it (they depend on it, e.g. the MQTT link before what publishes over it).
# A child with a beat timeout that stops beating is hung: the supervisor kills it (its kill
# hook ends an OS process; cancelling ends its task) and restarts it like a crash.
# More than `intensity` restarts within `period_ms` means restarting does not help: the
# supervisor gives the child up (state "failed") and escalates through on_escalate rather than
# looping forever; the node then reports itself degraded so the controller can move work away.
import asyncio

from . import console
from .clock import ticks_add, ticks_diff, ticks_ms

PERMANENT = "permanent"
TRANSIENT = "transient"
TEMPORARY = "temporary"
ONE_FOR_ONE = "one_for_one"
REST_FOR_ONE = "rest_for_one"

INTENSITY = 5
PERIOD_MS = 60000
BACKOFF_MIN_MS = 100
BACKOFF_MAX_MS = 30000
CHECK_MS = 100


class Child:
    """A supervised child: what to run, how to treat it, and how it is doing.

    start(child) returns the child's coroutine; it calls child.beat() from its own work loop.
    beat_timeout_ms: longest silence before the child counts as hung (None: never checked).
    start_timeout_ms: longest wait for the first beat after a (re)start (default beat timeout).
    kill(how): called whenever the child is halted, how being "crash", "hang" or "stop"; ends
    what the child runs outside the event loop (an OS process) where that is part of the fault.
    critical: the hardware watchdog is fed only while every critical child beats in time.
    """

    def __init__(self, id, start, restart=PERMANENT, beat_timeout_ms=None, start_timeout_ms=None,
                 kill=None, critical=False):
        if restart not in (PERMANENT, TRANSIENT, TEMPORARY):
            raise ValueError("restart type must be permanent, transient or temporary, not %r" % restart)
        self.id = id
        self.start = start
        self.restart = restart
        self.beat_timeout_ms = beat_timeout_ms
        self.start_timeout_ms = start_timeout_ms if start_timeout_ms is not None else beat_timeout_ms
        self.kill = kill
        self.critical = critical
        self.task = None
        self.state = "starting"   # running, backoff, stopped (ended normally), failed (given up)
        self.started_ms = ticks_ms()
        self.last_beat_ms = None
        self.restarts = 0
        self.backoff_ms = 0
        self.due_ms = 0
        self.last_error = None
        self._generation = 0

    def beat(self):
        self.last_beat_ms = ticks_ms()

    def silent_ms(self, now):
        """How long since the child last showed life (its start, before its first beat)."""
        return ticks_diff(now, self.last_beat_ms if self.last_beat_ms is not None else self.started_ms)

    def hung(self, now):
        limit = self.beat_timeout_ms if self.last_beat_ms is not None else self.start_timeout_ms
        return self.state == "running" and limit is not None and self.silent_ms(now) > limit


def _jittered(ms):
    # Half to all of the backoff, so restarts across a fleet do not line up.
    import random
    half = ms // 2
    return half + random.getrandbits(16) % (ms - half + 1)


def _call_safely(callback, *args):
    # A failing report must not stop the supervision it reports on.
    try:
        callback(*args)
    except Exception as e:
        console.say("supervisor: callback %r failed: %s: %s" % (callback, type(e).__name__, e))


class Supervisor:
    def __init__(self, name, strategy=ONE_FOR_ONE, intensity=INTENSITY, period_ms=PERIOD_MS,
                 backoff_min_ms=BACKOFF_MIN_MS, backoff_max_ms=BACKOFF_MAX_MS, on_exit=None,
                 on_escalate=None, check_ms=CHECK_MS):
        if strategy not in (ONE_FOR_ONE, REST_FOR_ONE):
            raise ValueError("strategy must be one_for_one or rest_for_one, not %r" % strategy)
        self.name = name
        self.strategy = strategy
        self.intensity = intensity
        self.period_ms = period_ms
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        # on_exit(child, how, error): how is "crash", "hang" or "normal"; for crash records.
        self.on_exit = on_exit
        # on_escalate(child, reason): restarts exceeded the intensity; the child is given up.
        self.on_escalate = on_escalate
        self.check_ms = check_ms
        self.children = []
        self.recent_restarts = []
        self.monitor_beat_ms = ticks_ms()
        self.failure = None

    # -- children -------------------------------------------------------------------------------

    def child(self, id):
        for c in self.children:
            if c.id == id:
                return c
        return None

    def start_child(self, child):
        if self.child(child.id) is not None:
            raise ValueError("supervisor %s already has a child %r" % (self.name, child.id))
        self.children.append(child)
        self._spawn(child)
        return child

    def terminate_child(self, id):
        """Stop a child for good (an assignment removed it); nothing restarts it."""
        child = self.child(id)
        if child is None:
            return None
        self._halt(child)
        child.state = "stopped"
        self.children.remove(child)
        return child

    def terminate_all(self, how="stop"):
        for child in list(self.children):
            self.terminate_child(child.id)

    def critical_fresh(self, now=None):
        """(True, None) while the monitor and every critical child beat in time; else (False, why)."""
        now = ticks_ms() if now is None else now
        if ticks_diff(now, self.monitor_beat_ms) > max(2000, 20 * self.check_ms):
            return False, "supervisor %s stopped watching its children" % self.name
        for c in self.children:
            if not c.critical:
                continue
            if c.state == "failed":
                # Restarting did not help; a reset of the whole board is the next level up.
                return False, "critical child %s given up: %s" % (c.id, c.last_error)
            if c.hung(now):
                return False, "critical child %s silent for %d ms" % (c.id, c.silent_ms(now))
        return True, None

    # -- the watch loop ---------------------------------------------------------------------------

    def fail(self, error):
        """End run() with `error`: a failure nothing below this supervisor can contain, for its
        caller to handle (the node's runtime records it and resets the board)."""
        self.failure = error

    async def run(self, beat=None):
        """Watch the children until fail(); beat() is called each round (a supervisor supervised)."""
        while True:
            if self.failure is not None:
                self.terminate_all()
                raise self.failure
            self.monitor_beat_ms = now = ticks_ms()
            if beat is not None:
                beat()
            for child in list(self.children):
                if child.state == "running" and child.hung(now):
                    self._ended(child, "hang", None)
                elif child.state == "backoff" and ticks_diff(now, child.due_ms) >= 0:
                    self._spawn(child)
            await asyncio.sleep(self.check_ms / 1000)

    def _spawn(self, child):
        child._generation += 1
        child.state = "running"
        child.started_ms = ticks_ms()
        child.last_beat_ms = None
        child.task = asyncio.create_task(self._run_child(child, child._generation))

    async def _run_child(self, child, generation):
        how, error = "normal", None
        try:
            await child.start(child)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # any crash of a child is the supervisor's to handle
            how, error = "crash", e
        if child._generation == generation:
            self._ended(child, how, error, True)

    def _halt(self, child, inside=False, how="stop"):
        # A new generation first: whatever the old task does while dying is not reported.
        child._generation += 1
        if child.kill is not None:
            try:
                child.kill(how)
            except Exception as e:
                child.last_error = "kill failed: %s: %s" % (type(e).__name__, e)
        task, child.task = child.task, None
        # A task ending by itself is not cancelled (MicroPython refuses to cancel the running task).
        if task is not None and not inside and not task.done():
            task.cancel()

    def _ended(self, child, how, error, inside=False):
        if how == "hang":
            error_text = "no beat for %d ms" % child.silent_ms(ticks_ms())
        else:
            error_text = "%s: %s" % (type(error).__name__, error) if error is not None else None
        if how != "normal":
            child.last_error = error_text
        beat_since_start = child.last_beat_ms is not None
        self._halt(child, inside, how)
        if self.on_exit is not None:
            _call_safely(self.on_exit, child, how, error_text)
        restart = child.restart
        if restart == TEMPORARY or (restart == TRANSIENT and how == "normal"):
            child.state = "stopped"
            if restart == TEMPORARY:
                self.children.remove(child)
            return
        if not self._restart_allowed():
            child.state = "failed"
            if self.on_escalate is not None:
                _call_safely(self.on_escalate, child, "%d restarts within %d s; last: %s" % (
                    len(self.recent_restarts), self.period_ms // 1000, error_text or how))
            return
        # A child that beat after its last start was healthy: its next restart is quick again.
        if beat_since_start or child.backoff_ms == 0:
            child.backoff_ms = self.backoff_min_ms
        else:
            child.backoff_ms = min(child.backoff_ms * 2, self.backoff_max_ms)
        self._schedule(child)
        if self.strategy == REST_FOR_ONE:
            for later in self.children[self.children.index(child) + 1:]:
                if later.state in ("running", "backoff"):
                    self._halt(later)
                    later.backoff_ms = child.backoff_ms
                    self._schedule(later)
                    # Due with the failed child: the watch loop starts them in order after it.
                    later.due_ms = child.due_ms

    def _schedule(self, child):
        child.restarts += 1
        child.state = "backoff"
        child.due_ms = ticks_add(ticks_ms(), _jittered(child.backoff_ms))

    def _restart_allowed(self):
        now = ticks_ms()
        self.recent_restarts = [t for t in self.recent_restarts if ticks_diff(now, t) < self.period_ms]
        if len(self.recent_restarts) >= self.intensity:
            return False
        self.recent_restarts.append(now)
        return True
