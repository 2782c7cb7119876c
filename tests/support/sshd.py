"""A real OpenSSH server for provisioning tests: its own host key, a throwaway user key, and a
free port on loopback (or on `address` inside network namespace `netns`, a board on a LAN);
stopped (by its PID) when the test is done. `known_hosts` is a file naming
its host key, as `ssh-keyscan` would write it, for runs that check host keys."""
import getpass
import os
import shutil
import socket
import subprocess
import time

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


class Sshd:
    def __init__(self, workdir, user=None, address="127.0.0.1", netns=None):
        from edgefleet.controller.netutil import free_port
        self.workdir = workdir
        self.address, self.netns = address, netns
        # A port free here is as good a guess as any inside a fresh namespace, where none is taken.
        self.port = free_port()
        self.user = user or getpass.getuser()
        self.client_key = os.path.join(workdir, "client_key")
        self.host_key = os.path.join(workdir, "host_key")
        self.log = os.path.join(workdir, "sshd.log")
        self.known_hosts = os.path.join(workdir, "known_hosts")
        self.proc = None

    @property
    def target(self):
        return "%s@%s:%d" % (self.user, self.address, self.port)

    @property
    def host_name(self):
        """The name its key is filed under in known_hosts."""
        return "[%s]:%d" % (self.address, self.port)

    def fingerprint(self):
        """Its host key's fingerprint, SHA256:..., from OpenSSH's own ssh-keygen."""
        out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", self.host_key + ".pub"],
                             capture_output=True, text=True, check=True).stdout
        return out.split()[1]

    def log_size(self):
        return os.path.getsize(self.log) if os.path.exists(self.log) else 0

    def log_since(self, offset):
        with open(self.log) as f:
            f.seek(offset)
            return f.read()

    def rotate_host_key(self):
        """Restart on the same port with a new host key: the board reinstalled, or an impostor."""
        self.stop()
        for name in (self.host_key, self.host_key + ".pub"):
            os.remove(name)
        self._keygen(self.host_key)
        return self._serve()

    @staticmethod
    def _keygen(path):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)

    def start(self):
        for key in (self.host_key, self.client_key):
            self._keygen(key)
        authorized = os.path.join(self.workdir, "authorized_keys")
        shutil.copyfile(self.client_key + ".pub", authorized)
        config = os.path.join(self.workdir, "sshd_config")
        with open(config, "w") as f:
            f.write("\n".join([
                "Port %d" % self.port, "ListenAddress " + self.address, "HostKey " + self.host_key,
                "AuthorizedKeysFile " + authorized, "PidFile " + os.path.join(self.workdir, "sshd.pid"),
                "PasswordAuthentication no", "KbdInteractiveAuthentication no", "StrictModes no",
                "UsePAM no", "Subsystem sftp " + SFTP_SERVER, ""]))
        return self._serve()

    def _serve(self):
        config = os.path.join(self.workdir, "sshd_config")
        with open(self.host_key + ".pub") as f:
            key_type, key = f.read().split()[:2]
        with open(self.known_hosts, "w") as f:
            f.write("%s %s %s\n" % (self.host_name, key_type, key))
        os.makedirs("/run/sshd", exist_ok=True)
        # -D: stays in the foreground, so self.proc is the server and stop() ends exactly it.
        argv = [SSHD, "-D", "-f", config, "-E", self.log]
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns] + argv if self.netns else argv)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.address, self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("sshd did not start: %s" % open(self.log).read()[-1000:])

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def sshd_available():
    return os.path.exists(SSHD) and os.path.exists(SFTP_SERVER)
