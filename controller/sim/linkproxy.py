"""A TCP forwarder between one node and its broker that a test can cut like a lost Wi-Fi link.

`cut()` makes the link silent without closing anything: no byte moves in either direction and
every connection stays open, so neither end learns of the loss from TCP - only from MQTT
keepalives, as with a real radio outage. New connections made during the cut are accepted
(a node's CONNECT then waits for a CONNACK that never comes) and closed on `restore()`
without ever reaching the broker: forwarding a stale CONNECT later would take over the node's
live session by client id. Connections from before the cut resume on `restore()`; by then
the broker has usually dropped its side, and that close reaches the node.

Loopback only, at most `max_connections` at once; `stop()` closes every socket and joins
every thread.
"""
import select
import socket
import threading

from ..errors import BrokerError

POLL_S = 0.1
CHUNK = 16384


class LinkProxy:
    def __init__(self, upstream_port, upstream_host="127.0.0.1", host="127.0.0.1", max_connections=16, port=None):
        if host not in ("127.0.0.1", "localhost") or upstream_host not in ("127.0.0.1", "localhost"):
            raise BrokerError("LinkProxy forwards on loopback only", upstream_host, upstream_port)
        self.host = host
        self.upstream = (upstream_host, upstream_port)
        self.max_connections = max_connections
        # None: any free port. A given one lets a new proxy take over a stopped one's address,
        # so the nodes that dialled the old one find the link again.
        self.port = port
        self.connections_total = 0
        self._listener = None
        self._accept_thread = None
        self._pipes = []           # live _Pipe objects
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._forwarding = threading.Event()
        self._forwarding.set()

    @property
    def is_cut(self):
        return not self._forwarding.is_set()

    def start(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port or 0))
        listener.listen(8)
        listener.settimeout(POLL_S)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="linkproxy-accept-%d" % self.port,
                                               daemon=True)
        self._accept_thread.start()
        return self

    def cut(self):
        with self._lock:
            self._forwarding.clear()

    def restore(self):
        with self._lock:
            self._forwarding.set()

    def stop(self, timeout=5.0):
        self._stopping.set()
        self._forwarding.set()  # wake pipes waiting for a restore
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            pipes = list(self._pipes)
        for pipe in pipes:
            pipe.thread.join(timeout)
            pipe.close()
        alive = [p.thread.name for p in pipes if p.thread.is_alive()]
        if (self._accept_thread is not None and self._accept_thread.is_alive()) or alive:
            raise BrokerError("link proxy threads did not stop: %s" % alive, self.host, self.port)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- threads ------------------------------------------------------------------------------

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._pipes = [p for p in self._pipes if p.thread.is_alive()]
                if len(self._pipes) >= self.max_connections:
                    client.close()
                    continue
                self.connections_total += 1
                pipe = _Pipe(client, born_cut=not self._forwarding.is_set())
                pipe.thread = threading.Thread(target=self._run_pipe, args=(pipe,),
                                               name="linkproxy-pipe-%d-%d" % (self.port, self.connections_total),
                                               daemon=True)
                self._pipes.append(pipe)
            pipe.thread.start()

    def _run_pipe(self, pipe):
        try:
            if pipe.born_cut:
                # Held open and silent until the link is back, then dropped unforwarded.
                while not self._stopping.is_set() and not self._forwarding.wait(POLL_S):
                    pass
                return
            try:
                pipe.server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                return
            # A peer that stops reading must not wedge the pipe's sendall() for ever.
            pipe.client.settimeout(5)
            self._forward(pipe)
        finally:
            pipe.close()

    def _forward(self, pipe):
        ends = {pipe.client: pipe.server, pipe.server: pipe.client}
        while not self._stopping.is_set():
            if not self._forwarding.is_set():
                self._forwarding.wait(POLL_S)
                continue
            try:
                readable, _, _ = select.select(list(ends), [], [], POLL_S)
            except (OSError, ValueError):
                return
            if not self._forwarding.is_set():
                continue  # cut between select and read: the bytes wait in the kernel
            for sock in readable:
                try:
                    data = sock.recv(CHUNK)
                    if not data:
                        return
                    ends[sock].sendall(data)
                except OSError:
                    return


class _Pipe:
    def __init__(self, client, born_cut):
        self.client = client
        self.server = None
        self.born_cut = born_cut
        self.thread = None

    def close(self):
        for sock in (self.client, self.server):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
