"""The CLI as a user runs it: a process of its own, with its own EDGEFLEET_HOME."""
import os
import subprocess
import sys


def cli(home, *argv):
    """stdout of `edgefleet ARGV...` run with EDGEFLEET_HOME=home; fails the test on a non-zero exit."""
    env = dict(os.environ, EDGEFLEET_HOME=str(home))
    proc = subprocess.run([sys.executable, "-m", "edgefleet.controller.cli"] + list(argv), capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
    return proc.stdout
