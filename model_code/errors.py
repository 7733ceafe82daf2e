"""Errors that carry enough context for a user to fix their input."""

from __future__ import annotations


class DataError(ValueError):
    """Input that cannot be used as given: a file, variable, coordinate or value.

    The message names where the problem is (file, variable, level, time) and what was
    expected. Command-line tools exit with status 1 on it; servers answer 400.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        problems: list[str] | None = None,
        check: str | None = None,
    ):
        self.message = message
        self.source = source
        self.problems = list(problems or [])
        self.check = check
        """Name of the rule that failed, when one rule did (e.g. `time_duplicates`)."""
        text = f"{source}: {message}" if source else message
        if self.problems:
            text += "".join(f"\n  - {p}" for p in self.problems)
        super().__init__(text)


class ConfigError(DataError):
    """A configuration value that cannot be used: unknown key, wrong type or out of range.

    `field` is the dotted path of the offending key (e.g. `optim.lr`) so the message and
    callers can point at the exact line of the YAML file to change.
    """

    def __init__(self, message: str, *, field: str | None = None, source: str | None = None):
        self.field = field
        text = f"{field}: {message}" if field else message
        super().__init__(text, source=source, check="config")
