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


class Lan:
    """A small LAN: a bridge on this host at 10.<n>.0.1 (where the broker listens) and one network
    namespace per named machine, each joined to the bridge by a veth pair at 10.<n>.0.2, .3, ...
    Machines reach each other and the host across the bridge, never over loopback.
    `exec_argv(machine, argv)` runs a command on one of them."""

    def __init__(self, tag, machines):
        pid = os.getpid()
        n = 64 + (pid + 1) % 128   # apart from NetNamespace's subnet in the same process
        self.bridge = "efb%d" % pid
        self.host_ip = "10.%d.0.1" % n
        self.machines = {}
        for i, machine in enumerate(machines):
            self.machines[machine] = {"ns": "ef-%s-%s-%d" % (tag, machine, pid), "ip": "10.%d.0.%d" % (n, i + 2),
                                      "host_if": "efl%d%s" % (i, pid), "ns_if": "eth0"}

    def ip(self, machine):
        return self.machines[machine]["ip"]

    def ns(self, machine):
        return self.machines[machine]["ns"]

    def exec_argv(self, machine, argv):
        return ["ip", "netns", "exec", self.ns(machine)] + list(argv)

    def __enter__(self):
        if os.geteuid() != 0 or not shutil.which("ip"):
            pytest.skip("network namespaces need root and iproute2")
        try:
            _ip("link", "add", "name", self.bridge, "type", "bridge")
            _ip("addr", "add", self.host_ip + "/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for m in self.machines.values():
                _ip("netns", "add", m["ns"])
                _ip("link", "add", m["host_if"], "type", "veth", "peer", "name", m["ns_if"], "netns", m["ns"])
                _ip("link", "set", m["host_if"], "master", self.bridge)
                _ip("link", "set", m["host_if"], "up")
                for args in (("addr", "add", m["ip"] + "/24", "dev", m["ns_if"]), ("link", "set", m["ns_if"], "up"),
                             ("link", "set", "lo", "up")):
                    _ip("netns", "exec", m["ns"], "ip", *args)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for m in self.machines.values():
            _ip("link", "del", m["host_if"], check=False)
            _ip("netns", "del", m["ns"], check=False)
        _ip("link", "del", self.bridge, check=False)
