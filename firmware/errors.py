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
