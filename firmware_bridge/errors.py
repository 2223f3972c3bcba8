"""Typed errors of the firmware bridge.

Every error a user can meet derives from `DeviceError`, itself an
`edgetune.runtime.EdgetuneError`, so the CLI prints it as one line and exits
non-zero. Timeouts are always explicit and always surface as `IoTimeoutError`
(transport) or `DeviceNotRespondingError` (request retried to exhaustion).
"""
from __future__ import annotations

from ..runtime.errors import EdgetuneError


class DeviceError(EdgetuneError):
    """Any failure talking to the accelerator (board or emulator)."""

    exit_code = 3


class TransportError(DeviceError):
    """The byte link failed."""


class IoTimeoutError(TransportError, TimeoutError):
    """No byte arrived (read) or could be sent (write) within the explicit timeout."""


class TransportClosedError(TransportError):
    """The link is closed or was closed by the other end."""


class ProtocolError(DeviceError):
    """A well-formed frame carried something the protocol does not allow."""


class DeviceNotRespondingError(DeviceError):
    """A request was retried the maximum number of times without a valid answer."""


class DeviceErrorResponse(DeviceError):
    """The device answered with an ERROR frame (code and text)."""

    def __init__(self, code: int, text: str, command: str = ""):
        from .protocol import error_name

        self.code, self.text, self.command = code, text, command
        where = f" to {command}" if command else ""
        super().__init__(f"device error {error_name(code)} (0x{code:02x}){where}: {text}")


class SessionChangedError(DeviceErrorResponse):
    """The device reset (its session id changed); the host must re-upload its state."""


class DeviceResetLoopError(DeviceError):
    """The device kept resetting before any progress could be made."""
