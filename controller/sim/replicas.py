"""Controller replicas as processes, for tests and benchmarks: `edgefleet controller --shared`
against one broker and one PostgreSQL registry, each killable with SIGKILL (chaos.py's
ControllerProcess) or pausable with SIGSTOP (a replica cut off: its process stands still)."""
import os
import signal

from .chaos import ControllerProcess


class ReplicaProcess(ControllerProcess):
    def __init__(self, port, db_url, fleet_path, log_path, ctrl_id, group="ctrl", prefix="ef"):
        super().__init__(port, db_url, fleet_path, log_path)
        self.ctrl_id = ctrl_id
        self.cmd += ["--shared", group, "--id", ctrl_id, "--prefix", prefix]

    def pause(self):
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.killpg(self.proc.pid, signal.SIGCONT)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")
