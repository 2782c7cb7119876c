# Joining a Wi-Fi network on a MicroPython board (network.WLAN in station mode), for
# hal_micropython.py's net_up when config.json has "wifi". The HAL imports this module for one
# join, which drops it from sys.modules when it ends (its code is needed again only when the
# network drops); what lives between joins is the HAL's `_wifi` list (False: no radio):
# [the WLAN, the wait before the next join in ms, ticks_ms of the last failure or None].
#
# A join never blocks the event loop: it polls the radio between short sleeps, for at most
# "join_ms" (config.json's wifi, default 20 s). A failed join names the port's status (wrong
# password, no AP found, ...) and sets a wait before the next one, doubling from a tenth of
# join_ms up to 1.6 times it (2..32 s by default), so a wrong password or a missing AP costs the
# radio and the console little while the node infers offline.
import asyncio
import sys

try:
    from time import ticks_diff, ticks_ms
except ImportError:   # CPython (the firmware's unit tests)
    from time import monotonic

    def ticks_ms():
        return int(monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

JOIN_MS = 20000
# The ports' status constants (their values differ: rp2's CYW43 link status, esp32's codes);
# the first six end a join.
STATUS = (("STAT_WRONG_PASSWORD", "wrong password"), ("STAT_NO_AP_FOUND", "no AP found"),
          ("STAT_CONNECT_FAIL", "connect failed"), ("STAT_BEACON_TIMEOUT", "beacon timeout"),
          ("STAT_ASSOC_FAIL", "association failed"), ("STAT_HANDSHAKE_TIMEOUT", "handshake timeout"),
          ("STAT_IDLE", "idle"), ("STAT_CONNECTING", "connecting"), ("STAT_GOT_IP", "got IP"))


def _status(net, status):
    """(the status's name, whether it ends a join)."""
    for i in range(len(STATUS)):
        if getattr(net, STATUS[i][0], None) == status:
            return STATUS[i][1], i < 6
    return "status %s" % (status,), False


def _start(net, cfg, hostname):
    country = cfg.get("country")
    if country:
        # The regulatory domain goes before the radio starts (channels 12-13, power).
        if hasattr(net, "country"):
            net.country(country)
        else:
            try:
                import rp2
                rp2.country(country)
            except (ImportError, AttributeError):
                pass
    if hasattr(net, "hostname"):
        net.hostname(hostname)
    wlan = net.WLAN(net.STA_IF)
    wlan.active(True)
    if not hasattr(net, "hostname"):
        try:   # ports before network.hostname()
            wlan.config(hostname=hostname)
        except (OSError, ValueError, TypeError):
            pass
    return wlan


def _drop(wlan):
    try:
        wlan.disconnect()   # ends a join the radio still retries (an ESP32 refuses connect() during one)
    except OSError:
        pass


async def up(hal, cfg, hostname):
    """Join the network: its IP address once joined, None when it was up or the port has no
    `network` (the unix port: the host's network); OSError naming the status when the join
    fails or times out."""
    try:
        return await _up(hal, cfg, hostname)
    finally:
        sys.modules.pop(__name__, None)
        package = sys.modules.get(__name__.rpartition(".")[0])
        if package is not None and hasattr(package, "wifi"):
            delattr(package, "wifi")


async def _up(hal, cfg, hostname):
    try:
        import network as net
    except ImportError:
        hal._wifi = False
        return None
    state = hal._wifi
    if state is None:
        state = hal._wifi = [_start(net, cfg, hostname), 0, None]
    wlan = state[0]
    if wlan.isconnected():
        return None
    join_ms = cfg.get("join_ms") or JOIN_MS
    if state[2] is not None:
        left = state[1] - ticks_diff(ticks_ms(), state[2])
        if left > 0:
            await asyncio.sleep(left / 1000)
    _drop(wlan)
    ssid, key = cfg["ssid"], cfg.get("password")
    if key:
        wlan.connect(ssid, key)
    else:
        wlan.connect(ssid)
    started = ticks_ms()
    while True:
        await asyncio.sleep(join_ms / 100000)
        if wlan.isconnected():
            state[1], state[2] = 0, None
            return wlan.ifconfig()[0]
        status = wlan.status()
        why, failed = _status(net, status)
        if failed:
            break
        if ticks_diff(ticks_ms(), started) >= join_ms:
            why = "not joined after %d ms, %s" % (join_ms, why)
            break
    _drop(wlan)
    state[1] = min(join_ms * 8 // 5, state[1] * 2 or join_ms // 10)
    state[2] = ticks_ms()
    raise OSError("no network: Wi-Fi %r: %s (status %s); next join in %d ms" % (ssid, why, status, state[1]))
