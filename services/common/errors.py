"""The one base error whose message is safe to show to a person."""

from __future__ import annotations


class BackupManagerError(Exception):
    """Base of every error we raise on purpose; ``str(err)`` is safe to show."""

    code = "error"


class ConfigError(BackupManagerError):
    """A setting is missing or wrong; the message names the variable."""

    code = "config_error"


class DependencyUnavailable(BackupManagerError):
    """NATS or the metadata DB cannot be reached right now."""

    code = "dependency_unavailable"
