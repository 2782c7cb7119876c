# TLS under the node's MQTT link: the broker is verified against the fleet CA (ca.der, put on
# the board by flash/provision), under MicroPython's ssl (mbedTLS) and CPython's ssl alike.
import asyncio
import sys

from .errors import ConfigError, LinkError


class TlsRefused(LinkError):
    """The TLS handshake failed: the broker's certificate is not signed by the fleet CA, does not
    name the host the node dialled, or the two sides share no cipher. Here rather than in
    firmware/errors.py: only a board with TLS loads this module, and a class costs every other
    board's heap for nothing."""


def client_context(ca_path):
    """An SSLContext that accepts only a broker certificate chaining to the CA in `ca_path`."""
    try:
        import ssl
    except ImportError:
        # A firmware built without TLS: a configuration the node retries with backoff and
        # names, not a crash of its link that the supervisor gives up on.
        raise ConfigError("config: this %s has no ssl module, so no TLS link to the broker" % sys.implementation.name,
                          "broker.tls")
    try:
        with open(ca_path, "rb") as f:
            ca = f.read()
    except OSError as e:
        raise ConfigError("config: cannot read the fleet CA %s (%s)" % (ca_path, e), "broker.ca")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Both runtimes take DER bytes as cadata; DER is what the board stores (smaller than PEM).
    ctx.load_verify_locations(cadata=ca)
    return ctx


async def open_tls(host, port, ctx, server_hostname):
    """(reader, writer) of a verified TLS connection; TlsRefused naming the reason otherwise."""
    if sys.implementation.name != "micropython":
        import ssl
        try:
            return await asyncio.open_connection(host, port, ssl=ctx, server_hostname=server_hostname)
        except ssl.SSLCertVerificationError as e:
            raise TlsRefused("broker %s failed TLS verification: %s" % (server_hostname, e.verify_message or e))
        except ssl.SSLError as e:
            raise TlsRefused("TLS handshake with %s failed: %s" % (server_hostname, e.reason or e))
    # MicroPython's asyncio defers the handshake to the first read, where a failed verification
    # surfaces as a bare errno. A blocking handshake reports mbedTLS's reason instead; it holds
    # the scheduler for one handshake per connect, which a board's watchdog period covers.
    import socket
    info = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    sock = socket.socket(info[0], info[1], info[2])
    try:
        sock.settimeout(10)
        sock.connect(info[-1])
        try:
            link = ctx.wrap_socket(sock, server_hostname=server_hostname)
        except ValueError as e:   # mbedTLS's verification failures
            raise TlsRefused("broker %s failed TLS verification: %s" % (server_hostname, str(e).strip()))
    except BaseException:
        sock.close()
        raise
    link.setblocking(False)
    stream = asyncio.StreamWriter(link, {})
    return stream, stream
