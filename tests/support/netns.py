"""A network namespace joined to this host by a veth pair: a simulated board run inside it
reaches the broker over a real interface, not loopback. Needs root and iproute2."""
import os
import shutil
import subprocess

import pytest


def _ip(*args, check=True):
    return subprocess.run(["ip"] + list(args), capture_output=True, text=True, check=check)


class NetNamespace:
    """10.<n>.0.1 on the host side, 10.<n>.0.2 inside namespace `name`."""

    def __init__(self, tag):
        n = 64 + os.getpid() % 128
        self.name = "ef-%s-%d" % (tag, os.getpid())
        self.host_if, self.ns_if = "efh%d" % os.getpid(), "efn%d" % os.getpid()
        self.host_ip, self.board_ip = "10.%d.0.1" % n, "10.%d.0.2" % n

    def __enter__(self):
        if os.geteuid() != 0 or not shutil.which("ip"):
            pytest.skip("network namespaces need root and iproute2")
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", self.host_ip + "/24", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            for args in (("addr", "add", self.board_ip + "/24", "dev", self.ns_if), ("link", "set", self.ns_if, "up"),
                         ("link", "set", "lo", "up")):
                _ip("netns", "exec", self.name, "ip", *args)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.name, check=False)
