"""Exceptions. `AtldError` and its subclasses are user errors: the CLI prints their message and exits
non-zero. `AtldInternalError` is a bug in atld-deploy itself."""

from __future__ import annotations


class AtldError(Exception):
    """A problem with what the user asked for or gave us; the message says what to do."""

    exit_code = 2


class ConfigError(AtldError):
    """An invalid option or configuration value."""


class DataError(AtldError):
    """A missing or malformed data set or input image."""


class CheckpointError(AtldError):
    """A missing, corrupt or incompatible run directory or checkpoint."""


class ExportError(AtldError):
    """An artifact could not be exported or failed a static check."""


class ArtifactError(ExportError):
    """An artifact directory that is missing, malformed, incomplete, tampered with, unverified or unsigned."""


class EngineError(AtldError):
    """A runtime backend or engine is missing, stale or does not match this machine."""


class ParityError(AtldError):
    """An exported graph does not compute what PyTorch computes."""


class AtldInternalError(RuntimeError):
    """A bug in atld-deploy: please report it with the traceback (--verbose)."""
