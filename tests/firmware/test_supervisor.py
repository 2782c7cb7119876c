# The OTP-style supervisor under CPython and MicroPython: restart types, strategies, backoff,
# restart intensity and escalation, hang detection.
import asyncio

from firmware import supervisor as sv
from unit import bounded


def _supervisor(**kw):
    kw.setdefault("backoff_min_ms", 10)
    kw.setdefault("backoff_max_ms", 80)
    kw.setdefault("check_ms", 5)
    return sv.Supervisor("test", **kw)


class Body:
    """A child body whose behaviour the test steers: beat forever, crash, return or hang."""

    def __init__(self, mode="beat"):
        self.mode = mode
        self.starts = 0
        self.kills = 0

    async def __call__(self, child):
        self.starts += 1
        while True:
            if self.mode == "crash":
                raise RuntimeError("boom %d" % self.starts)
            if self.mode == "return":
                return
            if self.mode == "beat":
                child.beat()
            await asyncio.sleep(0.005)

    def kill(self, how):
        self.kills += 1
        self.killed_for = how


async def _until(cond, ms=2000):
    waited = 0
    while not cond():
        await asyncio.sleep(0.005)
        waited += 5
        if waited > ms:
            raise AssertionError("condition not met in %d ms" % ms)


@bounded(10)
async def test_one_for_one_restarts_only_the_crashed_child():
    exits = []
    sup = _supervisor(on_exit=lambda c, how, err: exits.append((c.id, how, err)))
    a, b = Body(), Body("crash")
    asyncio.create_task(sup.run())
    sup.start_child(sv.Child("a", a))
    child_b = sup.start_child(sv.Child("b", b))
    await _until(lambda: b.starts >= 3)
    b.mode = "beat"
    await _until(lambda: sup.child("b").state == "running" and sup.child("b").last_beat_ms is not None)
    assert a.starts == 1, a.starts
    assert child_b.restarts >= 2
    assert exits[0][0] == "b" and exits[0][1] == "crash" and "RuntimeError: boom 1" in exits[0][2], exits
    sup.terminate_all()


@bounded(10)
async def test_rest_for_one_restarts_the_children_started_after_the_failed_one():
    sup = _supervisor(strategy=sv.REST_FOR_ONE)
    first, link, worker = Body(), Body(), Body()
    asyncio.create_task(sup.run())
    for name, body in (("first", first), ("link", link), ("worker", worker)):
        sup.start_child(sv.Child(name, body))
    await _until(lambda: worker.starts == 1)
    link.mode = "crash"
    await _until(lambda: link.starts >= 2)
    link.mode = "beat"
    await _until(lambda: worker.starts >= 2 and sup.child("worker").state == "running")
    assert first.starts == 1
    sup.terminate_all()


@bounded(10)
async def test_restart_types_decide_what_comes_back():
    sup = _supervisor()
    asyncio.create_task(sup.run())
    transient, temporary, permanent = Body("return"), Body("crash"), Body("return")
    sup.start_child(sv.Child("transient", transient, restart=sv.TRANSIENT))
    sup.start_child(sv.Child("temporary", temporary, restart=sv.TEMPORARY))
    sup.start_child(sv.Child("permanent", permanent))
    await _until(lambda: permanent.starts >= 2)
    await asyncio.sleep(0.05)
    assert transient.starts == 1 and sup.child("transient").state == "stopped"
    assert temporary.starts == 1 and sup.child("temporary") is None
    # A transient child that crashes is restarted.
    crashy = Body("crash")
    sup.start_child(sv.Child("transient2", crashy, restart=sv.TRANSIENT))
    await _until(lambda: crashy.starts >= 2)
    sup.terminate_all()


@bounded(10)
async def test_backoff_doubles_until_the_child_beats_then_resets():
    sup = _supervisor(backoff_min_ms=30, backoff_max_ms=120, intensity=50)
    asyncio.create_task(sup.run())
    body = Body("crash")
    child = sup.start_child(sv.Child("c", body))
    await _until(lambda: body.starts >= 5)
    assert child.backoff_ms == 120, child.backoff_ms
    body.mode = "beat"
    await _until(lambda: child.last_beat_ms is not None)
    body.mode = "crash"
    await _until(lambda: child.state == "backoff")
    assert child.backoff_ms == 30, child.backoff_ms
    sup.terminate_all()


@bounded(10)
async def test_a_crash_loop_past_the_intensity_escalates_instead_of_looping():
    escalations = []
    sup = _supervisor(intensity=5, period_ms=60000, on_escalate=lambda c, why: escalations.append((c.id, why)))
    asyncio.create_task(sup.run())
    body = Body("crash")
    child = sup.start_child(sv.Child("w", body))
    await _until(lambda: escalations)
    await asyncio.sleep(0.1)
    assert body.starts == 6, body.starts   # the first start and five restarts
    assert child.state == "failed"
    assert escalations[0][0] == "w" and "5 restarts within 60 s" in escalations[0][1], escalations
    assert "RuntimeError" in escalations[0][1]
    assert sup.terminate_child("w") is child and sup.children == []


@bounded(10)
async def test_a_hung_child_is_killed_and_restarted():
    exits = []
    sup = _supervisor(on_exit=lambda c, how, err: exits.append((how, err)))
    asyncio.create_task(sup.run())
    body = Body("beat")
    child = sup.start_child(sv.Child("w", body, beat_timeout_ms=60, kill=body.kill))
    await _until(lambda: child.last_beat_ms is not None)
    body.mode = "hang"
    await _until(lambda: body.starts >= 2)
    body.mode = "beat"
    assert body.kills >= 1 and body.killed_for == "hang"
    assert exits[0][0] == "hang" and "no beat for" in exits[0][1], exits
    await _until(lambda: child.last_beat_ms is not None and child.state == "running")
    sup.terminate_all()


@bounded(10)
async def test_watchdog_freshness_follows_critical_children_and_the_monitor():
    sup = _supervisor(intensity=1)
    monitor = asyncio.create_task(sup.run())
    link = Body("beat")
    sup.start_child(sv.Child("link", link, beat_timeout_ms=1000, critical=True))
    sup.start_child(sv.Child("side", Body("beat")))
    await _until(lambda: sup.child("link").last_beat_ms is not None)
    fresh, why = sup.critical_fresh()
    assert fresh, why
    link.mode = "crash"   # one restart is allowed, the second crash gives the link up
    await _until(lambda: not sup.critical_fresh()[0])
    assert "critical child link given up" in sup.critical_fresh()[1], sup.critical_fresh()
    sup.terminate_child("link")
    assert sup.critical_fresh()[0]
    monitor.cancel()
    await _until(lambda: not sup.critical_fresh()[0], 4000)
    assert "stopped watching" in sup.critical_fresh()[1]
    sup.terminate_all()


@bounded(10)
async def test_fail_ends_run_with_the_error_after_stopping_every_child():
    sup = _supervisor()
    running = asyncio.create_task(sup.run())
    body = Body()
    sup.start_child(sv.Child("w", body, kill=body.kill))
    await _until(lambda: body.starts == 1)
    sup.fail(OSError(5, "flash gone"))
    await _until(lambda: running.done())
    try:
        await running
        raise AssertionError("run() returned")
    except OSError as e:
        assert e.args == (5, "flash gone"), e.args
    assert sup.children == [] and body.kills == 1


def test_bad_specs_are_refused():
    try:
        sv.Child("x", None, restart="sometimes")
    except ValueError as e:
        assert "sometimes" in str(e)
    else:
        raise AssertionError("bad restart type accepted")
    try:
        sv.Supervisor("x", strategy="all_for_none")
    except ValueError as e:
        assert "all_for_none" in str(e)
    else:
        raise AssertionError("bad strategy accepted")
