"""User-facing errors. The CLI prints them as one line and exits non-zero."""


class EdgetuneError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""

    exit_code = 1


class ModelError(EdgetuneError):
    """The ONNX model cannot be read or uses something edgetune does not support."""


class DataError(EdgetuneError):
    """The training or validation data is malformed."""


class UsageError(EdgetuneError):
    """An option value is invalid."""

    exit_code = 2


class IsaError(UsageError, ImportError):
    """EDGETUNE_ISA asks for a kernel level this build or this CPU does not have."""
