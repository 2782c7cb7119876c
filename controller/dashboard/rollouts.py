"""Deploys and rollbacks started from the dashboard: the CLI's own machinery (`edgefleet
deploy`: bundle.inspect with the fleet's verifying key, resolve_group, Rollout waves with a
canary and health gates, the Deployer over MQTT as the operator; `edgefleet rollback`:
Deployer.rollback), run on a thread of its own so the page stays live, one at a time.

Its progress goes to the browsers as it happens (`rollout` updates: waves, the wave running,
each node's transfer state, the gate's log); who started it and how it ended go to the audit
log through the controller (ControllerService.note).
"""
import threading
import time

from ..deploy import bundle
from ..deploy.deployer import Deployer
from ..deploy.groups import resolve_group
from ..deploy.rollout import Gate, Rollout
from ..errors import EdgefleetError, InUse, RolloutError
from ..install import keys
from ..mqttlink import BrokerLink
from ..security.principals import OPERATOR

# What `edgefleet deploy` defaults to (controller/cli/deploy.py), but a shorter soak: an
# operator watching the page sees each gate pass.
CANARY, SOAK_S, WINDOW_MS, WAVE_TIMEOUT_S, TIMEOUT_S = 1, 2.0, 30000, 120.0, 600.0
PROGRESS_EVERY_S = 0.25


class Rollouts:
    def __init__(self, service, hub, verify_key_path=None):
        self.service = service
        self.hub = hub
        self.verify_key_path = verify_key_path
        self._lock = threading.Lock()
        self._thread = None
        self.current = None     # the last deploy or rollback, as the page shows it

    def _operator_link(self):
        link = self.service.link
        return BrokerLink(link.address, OPERATOR, link.security)

    def _claim(self, what):
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise InUse("a %s is running; wait for it to end" % self.current["kind"])
            self.current = what
            self._thread = threading.Thread(target=self._run, args=(what,), name="edgefleet-dashboard-rollout",
                                            daemon=True)
        self._publish()
        self._thread.start()

    def deploy(self, data, group, who):
        """Check the bundle and the group now (errors to the caller), then roll it out."""
        key = keys.load_verifying(self.verify_key_path)
        info = bundle.inspect(data, key, "the uploaded bundle")
        manifest = info["manifest"]
        nodes = resolve_group(group, self.service.snapshot()["nodes"], "the fleet", board=manifest["board"])
        rollout = Rollout(data, info["id"], manifest["version"], nodes, canary=CANARY, gate=Gate(soak_s=SOAK_S),
                          window_ms=WINDOW_MS, wave_timeout_s=WAVE_TIMEOUT_S)
        self._claim({"kind": "deploy", "who": who, "group": group, "version": manifest["version"],
                     "board": manifest["board"], "bytes": len(data), "rollout": rollout, "status": "running",
                     "started": time.time(), "ended": None, "error": None})
        return {"message": "deploying %s to %d node(s) of %s in %d wave(s)" % (
            manifest["version"], len(nodes), group, len(rollout.waves))}

    def rollback(self, group, who):
        nodes = resolve_group(group, self.service.snapshot()["nodes"], "the fleet")
        self._claim({"kind": "rollback", "who": who, "group": group, "nodes": nodes, "status": "running",
                     "started": time.time(), "ended": None, "error": None})
        return {"message": "rolling back %d node(s) of %s" % (len(nodes), group)}

    def _run(self, what):
        try:
            with Deployer(prefix=self.service.prefix, link=self._operator_link()) as deployer:
                if what["kind"] == "deploy":
                    last = [0.0]

                    def progress(_):
                        if time.monotonic() - last[0] >= PROGRESS_EVERY_S:
                            last[0] = time.monotonic()
                            self._publish()
                    rollout = deployer.run(what["rollout"], timeout_s=TIMEOUT_S, on_progress=progress)
                    what["status"] = rollout.status
                    what["error"] = rollout.error
                else:
                    what["versions"] = deployer.rollback(what["nodes"])
                    what["status"] = "done"
        except (EdgefleetError, RolloutError) as e:
            what["status"], what["error"] = "failed", str(e)
        except Exception as e:   # a bug here must not go unseen, nor stop the dashboard
            what["status"], what["error"] = "failed", "%s: %s" % (type(e).__name__, e)
        what["ended"] = time.time()
        self._publish()
        outcome = what["status"] + (": " + what["error"] if what["error"] else "")
        args = {"to": what["group"]}
        if what["kind"] == "deploy":
            args["version"] = what["version"]
        try:
            self.service.note(what["who"], what["kind"], args, outcome)
        except EdgefleetError:
            pass   # the controller stopped meanwhile; the rollout's own events are in the log

    def view(self):
        """The current (or last) deploy or rollback as plain data, None before the first."""
        what = self.current
        if what is None:
            return None
        out = {k: v for k, v in what.items() if k != "rollout"}
        rollout = what.get("rollout")
        if rollout is not None:
            out["progress"] = rollout.progress()
            out["waves"] = rollout.waves
            out["nodes"] = {node: t.status for node, t in rollout.transfers.items()}
            out["rolled_back"] = sorted(rollout.rolled_back)
            # Rollout.log's times are on the monotonic clock: as wall-clock times, for the page.
            offset = time.time() - time.monotonic()
            out["log"] = [[t + offset, text] for t, text in rollout.log[-50:]]
        return out

    def _publish(self):
        self.hub.publish("rollout", self.view())
