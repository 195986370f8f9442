"""Typed errors. Each carries the path, knob or key it concerns, so the CLI can
print one clear line and the daemon can log a structured field."""

from __future__ import annotations


class HosttuneError(Exception):
    """Base of every error hosttune raises on purpose."""

    def __init__(self, message: str, *, subject: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.subject = subject

    def __str__(self) -> str:
        if self.subject and self.subject not in self.message:
            return f"{self.subject}: {self.message}"
        return self.message


class HostError(HosttuneError):
    """A read or write of the host failed."""

    def __init__(self, path: str, message: str, *, errno: int | None = None) -> None:
        super().__init__(message, subject=path)
        self.path = path
        self.errno = errno


class HostReadError(HostError):
    """A file under /proc, /sys, /etc or /dev is missing or unreadable."""


class HostWriteError(HostError):
    """The kernel (or the filesystem) refused a write."""


class HostCommandError(HostError):
    """A host command (`npu-smi info`, say) is missing, timed out or failed.
    `path` holds the command line as one would type it."""


class ParseError(HosttuneError):
    """A host file has contents we cannot make sense of."""

    def __init__(self, path: str, message: str, *, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(message, subject=where)
        self.path = path
        self.line = line


class ConfigError(HosttuneError):
    """Bad configuration: names the file, the key and the line when known."""

    def __init__(
        self, message: str, *, path: str | None = None, key: str | None = None,
        line: int | None = None,
    ) -> None:
        parts = [p for p in (path, f"line {line}" if line else None, key) if p]
        super().__init__(message, subject=": ".join(parts) if parts else None)
        self.path = path
        self.key = key
        self.line = line


class KnobError(HosttuneError):
    """A knob is unknown, unavailable, out of bounds or owned by the admin."""

    def __init__(self, knob: str, message: str) -> None:
        super().__init__(message, subject=knob)
        self.knob = knob


class ModelError(HosttuneError):
    """A model artifact is missing, malformed or incompatible."""


class ObjectiveError(HosttuneError):
    """An objective could not be measured (its command failed, no metric in
    its output, a metric file or endpoint unreadable)."""


class PermissionRefused(HosttuneError):
    """The caller is not allowed to do this (not root, not in the group)."""
