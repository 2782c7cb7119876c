"""Operator commands for the running controller, queued in the registry it already owns.

`edgefleet move`, `drain` and `apply` run in another process than the controller. They queue a
command in the registry; the controller takes pending commands on every tick (about once a
second), acts (controller/fleet/operator.py), and writes the outcome back; the CLI waits for that
outcome and prints it. The registry is the one thing both sides already share, so no second
channel, port or credential is needed, and a command given while the controller is down runs
when it comes back.
"""
import time

OPS = ("move", "drain", "undrain", "apply")


def submit(store, op, args, now=None):
    if op not in OPS:
        raise ValueError("unknown operator command %r" % op)
    return store.submit_command(op, args, now)


def wait(store, command_id, timeout):
    """Wait for the controller to act; returns (state, answer), state 'pending' on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        state, answer = store.command_outcome(command_id)
        if state != "pending" or time.monotonic() >= deadline:
            return state, answer
        time.sleep(0.2)
