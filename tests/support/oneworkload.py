"""A fleet that runs one workload, as the migration tests drive it: declared with `edgefleet
apply` once the boards report, and where it runs, read from the controller's snapshot."""
from edgefleet.controller.fleet import fleetfile
from support.cli_process import cli
from support.waiting import wait_until


def apply_when_powered(controller, broker, home, workload, nodes):
    """`edgefleet apply` the one workload once `nodes` boards have reported their power: placed
    on arrival, it would go to whichever board booted first."""
    wait_until(lambda: controller.snapshot() and len(controller.snapshot()["nodes"]) == nodes
               and all(n["power"] for n in controller.snapshot()["nodes"]), 60, "%d nodes with telemetry" % nodes)
    fleet_file = home / "fleet.toml"
    fleet_file.write_text(fleetfile.dump([workload]))
    cli(home, "apply", str(fleet_file), "--broker=mqtt://%s:%d" % (broker.host, broker.port))


def host(controller):
    """The workload's one node once no move is in progress, else None."""
    snap = controller.snapshot()
    if not snap or snap["moves"] or not snap["workloads"]:
        return None
    (wl,) = snap["workloads"]
    return wl["nodes"][0] if len(wl["nodes"]) == 1 else None
