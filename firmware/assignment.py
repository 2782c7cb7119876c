# The node's side of the assign message, as pure logic: given what runs and what the
# controller wants, which workloads to stop and which to start. No I/O here.
from .errors import ProtocolError


def _run_key(spec):
    # The spec without input.until: moving a workload's hand-over point (a live migration)
    # retunes the running worker instead of restarting it from its first input.
    source = {}
    for key in spec["input"]:
        if key != "until":
            source[key] = spec["input"][key]
    return (spec["model"], spec["rate"], sorted(source.items()), spec.get("output"))


def changes(running, desired):
    """running: {id: spec}; desired: list of specs. Returns (ids to stop, specs to start).

    A workload whose spec changed (other model, rate or input) is stopped and started again;
    one whose only change is input.until keeps running (see retuned()).
    """
    wanted = {}
    for spec in desired:
        wanted[spec["id"]] = spec
    stop = []
    for wid in running:
        if wid not in wanted or _run_key(wanted[wid]) != _run_key(running[wid]):
            stop.append(wid)
    start = []
    for spec in desired:
        if spec["id"] not in running or spec["id"] in stop:
            start.append(spec)
    stop.sort()
    return stop, start


def retuned(running, desired):
    """Specs of running workloads that differ only in input.until: the worker takes the new
    spec in place."""
    out = []
    for spec in desired:
        old = running.get(spec["id"])
        if old is not None and old != spec and _run_key(old) == _run_key(spec):
            out.append(spec)
    return out


def accept(applied_epoch, msg):
    """True when an assign message is newer than (or equal to) the one applied; ProtocolError
    for an epoch no controller makes."""
    epoch = msg["epoch"]
    # Epochs are the controller's wall-clock ms (controller/fleet/reconciler.py): a real one is
    # below 2100-01-01 for any fleet's life. A forged one above, applied and cached on flash,
    # would have the node ignore its real controller for good.
    if not 0 <= epoch <= 4102444800000:
        raise ProtocolError("bad epoch", field="epoch")
    return applied_epoch is None or epoch >= applied_epoch
