"""The byte link under the frame codec.

Contract (the same for every implementation):

* ``open()`` before use; ``close()`` is idempotent and releases the port.
* ``write(data, timeout_sec)`` sends all of ``data`` or raises
  ``IoTimeoutError`` if that took longer than ``timeout_sec``.
* ``read(n, timeout_sec)`` returns between 1 and ``n`` bytes as soon as at
  least one byte is available, or raises ``IoTimeoutError`` when none arrived
  within ``timeout_sec``. It never returns ``b""``.
* Timeouts are explicit, finite, positive seconds: ``None`` (wait forever) is
  refused with ``ValueError``.
* A port that is closed, or closed by the other end, raises
  ``TransportClosedError``. Any other OS-level failure raises ``TransportError``.
"""
from __future__ import annotations

import abc
import errno
import math
import time

from .errors import IoTimeoutError, TransportClosedError, TransportError


def check_timeout(timeout_sec) -> float:
    """`timeout_sec` as a float, or ValueError when it is not finite seconds > 0."""
    if timeout_sec is None or not isinstance(timeout_sec, (int, float)) or \
            not math.isfinite(timeout_sec) or timeout_sec <= 0:
        raise ValueError(f"timeout_sec must be a finite number of seconds > 0, got {timeout_sec!r}")
    return float(timeout_sec)


class Transport(abc.ABC):
    """A byte link; see the module docstring for the contract every implementation keeps."""

    url = ""

    @abc.abstractmethod
    def open(self) -> None:
        """Open the link (a second call does nothing)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the link; idempotent."""

    @abc.abstractmethod
    def read(self, n: int, timeout_sec: float) -> bytes:
        """Between 1 and n bytes as soon as one is there; IoTimeoutError after timeout_sec."""

    @abc.abstractmethod
    def write(self, data: bytes, timeout_sec: float) -> None:
        """All of data, or IoTimeoutError after timeout_sec."""

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()


class SerialTransport(Transport):
    """Any pyserial URL: /dev/ttyUSB0, a pty path, socket://HOST:PORT, loop://."""

    def __init__(self, url: str, baudrate: int = 921600):
        self.url, self.baudrate = url, baudrate
        self._port = None

    def open(self) -> None:
        import serial

        if self._port is not None:
            return
        try:
            self._port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.1,
                                               write_timeout=1.0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportClosedError(f"cannot open the device port {self.url}: {open_failure(exc)}") from None

    def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception:  # noqa: BLE001 - closing must not fail
                pass

    def _need_port(self):
        if self._port is None or not self._port.is_open:
            raise TransportClosedError(f"{self.url or 'transport'} is closed")
        return self._port

    def read(self, n: int, timeout_sec: float) -> bytes:
        import serial

        timeout_sec = check_timeout(timeout_sec)
        port = self._need_port()
        try:
            port.timeout = timeout_sec
            data = port.read(1)
            if not data:
                raise IoTimeoutError(f"no byte from {self.url} within {timeout_sec:.3g} s")
            waiting = port.in_waiting
            if waiting and n > 1:
                data += port.read(min(n - 1, waiting))
            return data
        except IoTimeoutError:
            raise
        except serial.SerialException as exc:
            raise TransportClosedError(f"the link to {self.url} failed while reading: {_short(exc)}") from None
        except OSError as exc:
            raise TransportError(f"the link to {self.url} failed while reading: {_short(exc)}") from None

    def write(self, data: bytes, timeout_sec: float) -> None:
        import serial

        timeout_sec = check_timeout(timeout_sec)
        port = self._need_port()
        try:
            port.write_timeout = timeout_sec
            port.write(data)
        except IoTimeoutError:
            raise
        except serial.SerialTimeoutException:
            raise IoTimeoutError(f"could not send {len(data)} bytes to {self.url} within {timeout_sec:.3g} s") from None
        except serial.SerialException as exc:
            raise TransportClosedError(f"the link to {self.url} failed while writing: {_short(exc)}") from None
        except OSError as exc:
            raise TransportError(f"the link to {self.url} failed while writing: {_short(exc)}") from None


_OPEN_REASONS = (
    (errno.ENOENT, "no such port (is the board connected? check the path)"),
    (errno.EACCES, "permission denied (on Linux, add your user to the 'dialout' group)"),
    (errno.EBUSY, "the port is busy (another program has it open)"),
    (errno.ECONNREFUSED, "connection refused (nothing is listening there)"),
    (errno.EHOSTUNREACH, "host unreachable"),
    (errno.ETIMEDOUT, "connection timed out"),
    (errno.ENOTTY, "not a serial port"),
)


def open_failure(exc: BaseException) -> str:
    """A short reason for a failed open, instead of pyserial's nested raw text."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    for num, reason in _OPEN_REASONS:
        if code == num or f"[Errno {num}]" in text or f"({num}, " in text:
            return reason
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host name"
    if isinstance(exc, ValueError):
        return f"not a usable port or URL ({_short(exc)})"
    return _short(exc)


def _short(exc: BaseException) -> str:
    """pyserial's message without its repeated '[Errno N] could not open port X:' prefixes."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[-200:]


def read_exact(t: Transport, n: int, timeout_sec: float) -> bytes:
    """Read exactly n bytes within one overall deadline (IoTimeoutError otherwise)."""
    deadline = time.monotonic() + check_timeout(timeout_sec)
    out = bytearray()
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise IoTimeoutError(f"got {len(out)} of {n} bytes within {timeout_sec:.3g} s")
        out += t.read(n - len(out), left)
    return bytes(out)
