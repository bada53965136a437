"""Every error type nixtest raises on purpose lives here.

User-facing errors print as one line, without a traceback.
"""

from __future__ import annotations

from pathlib import Path

#: the longest message an error carries
MESSAGE_LIMIT = 2000


class NixtestError(Exception):
    """Base of nixtest's own errors: its message is one line for the user."""

    def __init__(self, message: str) -> None:
        line = " ".join(message.split("\n"))
        if len(line) > MESSAGE_LIMIT:  # a value quoted whole must not flood the terminal or a report
            line = line[: MESSAGE_LIMIT - 3] + "..."
        super().__init__(line)

    @property
    def message(self) -> str:
        return str(self)


class UsageError(NixtestError):
    """Bad command-line input (exit code 4)."""


class DefinitionError(NixtestError):
    """A test definition that cannot be used; names the file, the test and the key."""

    def __init__(self, file: Path | str, test: str | None, key: str | None, problem: str) -> None:
        self.file = str(file)
        self.test = test
        self.key = key
        self.problem = problem
        where = self.file
        if test is not None:
            where += f": test {test!r}"
        if key is not None:
            where += f": key {key!r}"
        super().__init__(f"{where}: {problem}")


class PackageSetError(NixtestError):
    """A package set that cannot be read, or a package it does not have."""


class UnknownPackage(PackageSetError):
    def __init__(self, name: str, set_spec: str) -> None:
        self.name = name
        super().__init__(f"unknown package {name!r} in package set {set_spec!r}")


class ProfileError(NixtestError):
    """A profile that cannot be built."""


class WrapperError(NixtestError):
    """A wrapper script that cannot be written or run."""


class ExecutionError(NixtestError):
    """A test process that could not be started or supervised."""
