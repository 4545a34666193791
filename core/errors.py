"""Exception classes of the engine.

Every error says what went wrong *and* what to do about it. Errors that collect several
problems (a config checked against declared attributes, a spec) carry them all in
``problems`` so that a user fixes everything in one go.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "AdfError",
    "ConfigError",
    "MissingExtraError",
    "RecordValidationError",
    "RegistryError",
    "SinkUnavailableError",
    "SinkWriteError",
    "SourceDataError",
    "SpecError",
    "StepError",
    "UnavailableTypeError",
]


class AdfError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigError(AdfError):
    """A configuration mapping does not match what a component declares.

    ``problems`` lists every problem found, each a one-line message that names the key.
    """

    def __init__(self, where: str, problems: Sequence[str]) -> None:
        self.where = where
        self.problems = list(problems)
        lines = "; ".join(self.problems)
        super().__init__(f"invalid configuration for {where}: {lines}")


class SpecError(ConfigError):
    """A flow spec is malformed: every reason is in ``problems``."""

    def __init__(self, problems: Sequence[str], where: str = "flow spec") -> None:
        super().__init__(where, problems)


class RegistryError(AdfError):
    """A type name does not resolve to an installed component."""

    def __init__(self, kind: str, name: str, installed: Iterable[str], extra: str | None = None) -> None:
        self.kind = kind
        self.name = name
        self.installed = sorted(installed)
        self.extra = extra
        msg = f"unknown {kind} type {name!r}; installed {kind} types: {', '.join(self.installed) or '(none)'}"
        if extra:
            msg += f"; install `active-data-flow[{extra}]` to add {name!r}"
        super().__init__(msg)


class UnavailableTypeError(AdfError):
    """A built-in type whose module is not part of this build (a deployment that carries only
    the connectors that can run there, such as a Spin component)."""

    def __init__(self, kind: str, name: str, module: str) -> None:
        self.kind = kind
        self.name = name
        self.module = module
        super().__init__(f"the {kind} type {name!r} is not available here: its module {module} is not part of this build")


class SinkUnavailableError(AdfError):
    """A sink failure no record can get past (wrong credentials, a server still down after the
    sink's own retries): the engine fails the run at once — the checkpoint lets the next run
    resume — instead of retrying record by record and dead-lettering every record."""


class MissingExtraError(AdfError, ImportError):
    """A connector needs a third-party package that is not installed."""

    def __init__(self, package: str, extra: str, what: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{what} needs the Python package {package!r}, which is not installed; "
            f"install it with `pip install 'active-data-flow[{extra}]'`"
        )


class RecordValidationError(AdfError, ValueError):
    """A record does not match its schema; ``field`` names the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"field {field!r}: {reason}")


class StepError(AdfError):
    """A step failed on one record (the record goes to the dead-letter destination)."""

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        self.cause = cause
        super().__init__(f"step {step!r} failed: {type(cause).__name__}: {cause}")


class SinkWriteError(AdfError):
    """A sink could not write a record after all retries."""


class SourceDataError(AdfError):
    """A source's input cannot be read as configured (a CSV header that names a column twice, a
    header row that does not parse): the message names the file, the line, and what to do."""
