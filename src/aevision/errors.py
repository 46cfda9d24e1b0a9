"""The one exception type users see.

Anything the user can fix (a bad option, a missing file, an image the model cannot take) is raised
as :class:`AevisionError` with a one-line message naming the culprit; the CLI prints that line and
exits with status 2. Every other exception is a bug in aevision.
"""

from __future__ import annotations


class AevisionError(ValueError):
    """A problem with the user's input, config or files, described in one line."""


class ConfigError(AevisionError):
    """A config field has a value that is not allowed."""

    def __init__(self, field: str, value: object, expected: str):
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: got {value!r}, expected {expected}")

    def __reduce__(self) -> tuple[type, tuple[str, object, str]]:
        # rebuilt from its own fields: a ConfigError raised in a worker process (DDP, DataLoader
        # workers, a process pool) reaches the parent as itself, not as a TypeError from unpickling
        return type(self), (self.field, self.value, self.expected)


class DataError(AevisionError):
    """A dataset or image file cannot be used."""


class DivergenceError(AevisionError):
    """Training produced a non-finite loss."""
