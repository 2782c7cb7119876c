"""One rollout of a bundle to a few nodes, driven by the Deployer itself (as `edgefleet deploy`
does, without its CLI), for tests that watch what the nodes do with it."""
from edgefleet.controller.deploy import bundle
from edgefleet.controller.deploy.deployer import Deployer
from edgefleet.controller.deploy.rollout import Gate, Rollout


class Interrupted(Exception):
    """Raised from on_progress to stop watching a rollout part way (the deployer disconnects)."""


def run_rollout(broker, data, nodes, version, gate=None, window_ms=8000, wave_timeout_s=90, timeout_s=150,
                on_progress=None, **kwargs):
    """Roll `data` out to `nodes` as `version` through the broker; returns the Rollout, done,
    failed, or still running when on_progress raised Interrupted."""
    rollout = Rollout(data, bundle.bundle_id(data), version, nodes, gate=gate or Gate(soak_s=1.0),
                      window_ms=window_ms, wave_timeout_s=wave_timeout_s, **kwargs)
    with Deployer(broker.host, broker.port) as deployer:
        try:
            deployer.run(rollout, timeout_s=timeout_s, on_progress=on_progress)
        except Interrupted:
            pass
    return rollout
