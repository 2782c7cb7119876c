"""The dashboard's web app (Starlette): the page and its assets, the live stream, read APIs,
operator actions and /metrics.

Reads of what the controller holds in memory come from the live feed; reads of history (samples,
events, results) from a read-only registry connection of the web server's own (a Registry
belongs to one thread; SQLite's WAL lets it read while the controller writes), used from one
worker thread at a time. Actions go to the controller as operator requests
(ControllerService.request), answered in its own thread by the same code as the CLI's; deploys
and rollbacks run the CLI's rollout machinery (rollouts.py).
"""
import asyncio
import contextlib
import json
import os
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edgefleet.firmware import protocol
from edgefleet.firmware.update_errors import BundleError

from ..errors import EdgefleetError, NotFound
from ..fleet.operator import SUPERVISION_KINDS
from .auth import Throttled
from .hub import CLOSED

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
HOUR_S = 3600
KEEPALIVE_S = 15.0
MAX_BODY = 64 * 1024
MAX_BUNDLE = 32 * 1024 * 1024
# What the page may ask the controller to do, and the arguments each takes (as `edgefleet
# drain`, `drain --undo` and `move` send them).
ACTIONS = {"drain": ("node",), "undrain": ("node",), "move": ("workload", "node", "source")}
EVENT_LIMIT = 1000
MOVE_KINDS = ("move_started", "moved", "move_aborted")
KIND = re.compile(r"^[a-z_]{1,40}$")


class ApiError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class RegistryReader:
    """The web server's own read-only registry connection, opened on first use and used only
    from one worker thread of its own (a Registry belongs to one thread)."""

    def __init__(self, open_registry):
        self._open = open_registry
        self._registry = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgefleet-dashboard-registry")

    def _call(self, fn):
        if self._registry is None:
            self._registry = self._open()
        return fn(self._registry)

    async def read(self, fn):
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._call, fn)

    def _close(self):
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    def close(self):
        self._worker.submit(self._close).result()
        self._worker.shutdown()


def _address(request):
    return request.client.host if request.client else "?"


def _node_id(request):
    node = request.path_params["node"]
    if not protocol.valid_node_id(node):
        raise ApiError(400, "bad node id %r" % node)
    return node


def _int_param(request, name, default, low, high):
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "%s must be an integer" % name) from None
    if not low <= value <= high:
        raise ApiError(400, "%s must be from %d to %d" % (name, low, high))
    return value


def _json_object(body):
    try:
        args = json.loads(body or b"{}")
    except ValueError:
        raise ApiError(400, "the request body is not JSON") from None
    if not isinstance(args, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return args


def workload_stats(results, now, bins=10, per_s=60):
    """A workload's last hour from its results: score histogram, accuracy, latency percentiles
    and throughput per minute."""
    scores = [r[1] for r in results]
    hist = [0] * bins
    for score in scores:
        hist[min(bins - 1, max(0, int(score * bins)))] += 1
    judged = [r[3] for r in results if r[3] is not None]
    us = sorted(r[2] for r in results)
    start = int(now - HOUR_S) // per_s * per_s
    through = [0] * (HOUR_S // per_s + 1)
    for r in results:
        i = int((r[0] - start) // per_s)
        if 0 <= i < len(through):
            through[i] += 1
    return {
        "results": len(results), "score_hist": hist,
        "accuracy": sum(judged) / len(judged) if judged else None,
        "latency_us": {"p50": us[len(us) // 2], "p95": us[int(len(us) * 0.95)], "max": us[-1],
                       "mean": statistics.fmean(us)} if us else None,
        "throughput": {"start": start, "step_s": per_s, "per_s": [n / per_s for n in through]},
    }


def create_app(service, feed, hub, credentials, metrics, open_registry, rollouts):
    reader = RegistryReader(open_registry)

    def guarded(handler):
        async def endpoint(request):
            try:
                return await handler(request)
            except ApiError as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)
            except NotFound as e:
                return JSONResponse({"error": str(e)}, status_code=404)
            except EdgefleetError as e:
                return JSONResponse({"error": str(e)}, status_code=409)
            except BundleError as e:   # an uploaded bundle that is corrupt, or not signed by this fleet's key
                return JSONResponse({"error": str(e)}, status_code=400)
        return endpoint

    async def index(request):
        # The page runs only its own files (no inline script, nothing from elsewhere) and is
        # not to be framed by another site: what a CSP can hold it to.
        return FileResponse(os.path.join(STATIC, "index.html"), headers={
            "Cache-Control": "no-cache", "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff"})

    async def fleet(request):
        return JSONResponse(feed.fleet_view())

    async def node(request):
        node_id = _node_id(request)
        row = next((n for n in feed.fleet_view()["nodes"] if n["id"] == node_id), None)
        if row is None:
            raise NotFound("no node %r in the fleet" % node_id)
        since = int(time.time() - HOUR_S)
        res = feed.history.tiers[0][0] if feed.history else 10

        def read(registry):
            return registry.samples(node_id, res, since), registry.events(node_id, 200, SUPERVISION_KINDS)
        samples, events = await reader.read(read)
        return JSONResponse({"node": row, "res": res,
                             "samples": [dict(zip(("ts", "cpu", "mem_free", "battery", "rps"), s)) for s in samples],
                             "supervision": events, "log": list(feed.logs.get(node_id, ()))})

    async def workload(request):
        wid = request.path_params["workload"]
        wl = next((w for w in feed.fleet_view()["workloads"] if w["id"] == wid), None)
        if wl is None:
            raise NotFound("no workload %r" % wid)
        now = time.time()

        def read(registry):
            return registry.recent_results(wid, now - HOUR_S), registry.events(None, EVENT_LIMIT, MOVE_KINDS)
        results, move_events = await reader.read(read)
        # Its moves from the audit log (each event carries the move: trigger, from, to), so they
        # outlive a controller restart.
        moves = [{"ts": e["ts"], "kind": e["kind"], "from": e["data"]["from"], "to": e["data"]["to"],
                  "reason": e["data"]["reason"], "msg": e["msg"]}
                 for e in move_events if isinstance(e.get("data"), dict) and e["data"].get("workload") == wid
                 and {"from", "to", "reason"} <= set(e["data"])]
        return JSONResponse({"workload": wl, "hour": workload_stats(results, now), "migrations": moves[-50:]})

    async def events(request):
        node_id = request.query_params.get("node") or None
        if node_id is not None and not protocol.valid_node_id(node_id):
            raise ApiError(400, "bad node id %r" % node_id)
        kinds = [k for k in (request.query_params.get("kind") or "").split(",") if k]
        if any(not KIND.match(k) for k in kinds):
            raise ApiError(400, "bad event kind in %r" % request.query_params.get("kind"))
        limit = _int_param(request, "limit", 200, 1, EVENT_LIMIT)
        rows = await reader.read(lambda r: r.events(node_id, limit, kinds or None))
        return JSONResponse({"events": rows})

    async def rollout_view(request):
        return JSONResponse({"current": rollouts.view(),
                             "updates": [{"id": uid, "nodes": nodes} for uid, nodes in list(feed.ota.items())]})

    async def whoami(request):
        user = check(request)
        if user is None:
            return JSONResponse({"error": "operator credentials needed"}, status_code=401)
        return JSONResponse({"user": user})

    def check(request):
        try:
            return credentials.check(request.headers.get("authorization"), _address(request))
        except Throttled:
            raise ApiError(429, "too many wrong credentials from %s; wait a few seconds" % _address(request)) from None

    def operator(request, op):
        """Who acts, as the audit log names them; ApiError 401 without the operator's credentials."""
        user = check(request)
        if user is None:
            # No WWW-Authenticate header: the page asks for the login itself, not the browser's prompt.
            raise ApiError(401, "%s needs the operator's credentials" % op)
        return "%s@%s (dashboard)" % (user, _address(request))

    async def body_of(request, limit):
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, "request body over %d bytes" % limit)
        return body

    async def deploy(request):
        who = operator(request, "deploy")
        group = request.query_params.get("to") or ""
        if not group:
            raise ApiError(400, "deploy needs ?to=GROUP: all, a board, a runtime or node ids")
        data = await body_of(request, MAX_BUNDLE)
        if not data:
            raise ApiError(400, "deploy needs the bundle as the request body")
        return JSONResponse(await run_in_threadpool(rollouts.deploy, data, group, who))

    async def rollback(request):
        who = operator(request, "rollback")
        args = _json_object(await body_of(request, MAX_BODY))
        group = args.get("to")
        if not isinstance(group, str) or not group or set(args) - {"to"}:
            raise ApiError(400, "rollback takes {\"to\": GROUP}")
        return JSONResponse(await run_in_threadpool(rollouts.rollback, group, who))

    async def action(request):
        op = request.path_params["op"]
        if op not in ACTIONS:
            raise ApiError(404, "no action %r (there are: %s)" % (op, ", ".join(sorted(ACTIONS) + ["deploy", "rollback"])))
        who = operator(request, op)
        args = _json_object(await body_of(request, MAX_BODY))
        unknown = sorted(set(args) - set(ACTIONS[op]))
        if unknown:
            raise ApiError(400, "%s takes %s, not %s" % (op, ", ".join(ACTIONS[op]), ", ".join(unknown)))
        if any(not isinstance(v, str) for v in args.values()):
            raise ApiError(400, "%s's arguments are names (strings)" % op)
        args = {k: v for k, v in args.items() if v}
        for key, value in args.items():
            # Node ids and workload ids follow one rule on the wire (protocol.valid_node_id).
            if not protocol.valid_node_id(value):
                raise ApiError(400, "bad %s %r: 1-32 of a-z, 0-9, '-', '_'" % (key, value[:40]))
        answer = await run_in_threadpool(service.request, op, args, who)
        return JSONResponse(answer)

    async def stream(request):
        sub = hub.subscribe(asyncio.get_running_loop())
        first = "event: fleet\ndata: %s\n\n" % json.dumps(feed.fleet_view(), separators=(",", ":"))

        async def frames():
            try:
                yield first
                while True:
                    try:
                        frame = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    if frame is CLOSED:
                        return
                    yield frame
            finally:
                hub.unsubscribe(sub)
        return StreamingResponse(frames(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def prometheus(request):
        return Response(metrics.render(), media_type=metrics.content_type)

    routes = [
        Route("/", index),
        Route("/api/fleet", guarded(fleet)),
        Route("/api/node/{node}", guarded(node)),
        Route("/api/workload/{workload}", guarded(workload)),
        Route("/api/events", guarded(events)),
        Route("/api/rollouts", guarded(rollout_view)),
        Route("/api/whoami", guarded(whoami)),
        Route("/api/action/deploy", guarded(deploy), methods=["POST"]),
        Route("/api/action/rollback", guarded(rollback), methods=["POST"]),
        Route("/api/action/{op}", guarded(action), methods=["POST"]),
        Route("/stream", stream),
        Route("/metrics", prometheus),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        reader.close()

    return Starlette(routes=routes, lifespan=lifespan)
