# The node's side of the assign message, as pure logic: given what runs and what the
# controller wants, which workloads to stop and which to start. No I/O here.


def changes(running, desired):
    """running: {id: spec}; desired: list of specs. Returns (ids to stop, specs to start).

    A workload whose spec changed (other model, rate or input) is stopped and started again.
    """
    wanted = {}
    for spec in desired:
        wanted[spec["id"]] = spec
    stop = []
    for wid in running:
        if wid not in wanted or wanted[wid] != running[wid]:
            stop.append(wid)
    start = []
    for spec in desired:
        if spec["id"] not in running or spec["id"] in stop:
            start.append(spec)
    stop.sort()
    return stop, start


def accept(applied_epoch, msg):
    """True when an assign message is newer than (or equal to) the one applied."""
    return applied_epoch is None or msg["epoch"] >= applied_epoch
