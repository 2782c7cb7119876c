# The harness's watchdog line of a simulated MicroPython board ($NOTIFY_SOCKET, as systemd's
# sd_notify): hal_sim.py says READY and feeds through it. A module of its own because its feed
# is what the board leaves at the REPL as `ef_wdt` for `edgefleet flash`, and a function keeps
# its module's globals alive: these few, not the whole HAL.
_line = [None]


def notify_harness(message):
    """One datagram to the harness's watchdog line; False when there is none."""
    import os
    import socket
    path = os.getenv("NOTIFY_SOCKET")
    if not path:
        return False
    try:
        sock = _line[0]
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            # MicroPython's unix port takes a raw sockaddr_un: family 1 (AF_UNIX), then the path.
            sock.connect(b"\x01\x00" + path.encode() + b"\x00")
            _line[0] = sock
        sock.send(message.encode())
    except OSError:
        _line[0] = None
        return False
    return True


def feed_watchdog():
    notify_harness("WATCHDOG=1")
