class FirmwareError(Exception):
    """Root of every error the node runtime raises on purpose."""


class ConfigError(FirmwareError):
    """The node's config file on flash is missing or invalid."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field


class ProtocolError(FirmwareError):
    """A message does not follow docs/protocol.md; carries the message kind and the field."""

    def __init__(self, message, kind=None, field=None):
        super().__init__(message)
        self.kind = kind
        self.field = field


class MQTTError(FirmwareError):
    """The MQTT link failed or the broker refused a request; the link is closed unless noted."""


class LinkError(MQTTError):
    """The TCP connection could not be opened or broke (socket error, EOF), or was not open.
    (TlsRefused, its TLS kind, lives in firmware/tlslink.py: a board without TLS never loads it.)"""


class ConnectRefused(MQTTError):
    """The broker answered CONNECT with a non-zero CONNACK return code (kept in `code`)."""

    REASONS = ("accepted", "unacceptable protocol version", "client identifier rejected",
               "server unavailable", "bad user name or password", "not authorized")

    def __init__(self, code):
        reason = self.REASONS[code] if 0 < code < len(self.REASONS) else "unknown return code"
        super().__init__("broker refused the connection: %s (%d)" % (reason, code))
        self.code = code


class ProtocolViolation(MQTTError):
    """The broker sent bytes that are not valid MQTT 3.1.1 for this client."""


class Timeout(MQTTError):
    """An acknowledgement did not come in time, or the broker went silent past the keepalive.

    A publish or subscribe that times out leaves the link open; a silent broker closes it."""


class SubscribeRefused(MQTTError):
    """The broker answered SUBSCRIBE with failure (0x80); the link stays open."""
