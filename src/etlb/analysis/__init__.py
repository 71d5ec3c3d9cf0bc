"""Static analysers that split shell commands and SQL text into classified parts.

`etlb.analysis.shell.analyse_shell` and `etlb.analysis.sql.analyse_sql` are pure functions: they read
nothing from disk or the environment, start no process and return frozen records. Each raises an
`AnalysisError` instead of guessing when it cannot analyse its input, and the error's `code` is the
refusal reason code that the gate records:

- `opaque_target`: the input could not be parsed, so what it would touch is unknown.
- `analysis_limit_exceeded`: the input is longer or nested deeper than the analyser accepts.

Neither error ever means "allowed": the caller refuses the action.
"""

from __future__ import annotations

from etlb.errors import ClassificationError
from etlb.model import ReasonCode

__all__ = [
    "ANALYSIS_LIMIT_EXCEEDED",
    "OPAQUE_TARGET",
    "AnalysisError",
    "ShellAnalysisError",
    "SqlAnalysisError",
]

OPAQUE_TARGET = ReasonCode.OPAQUE_TARGET.value
ANALYSIS_LIMIT_EXCEEDED = ReasonCode.ANALYSIS_LIMIT_EXCEEDED.value

_CODES = frozenset({OPAQUE_TARGET, ANALYSIS_LIMIT_EXCEEDED})


class AnalysisError(ClassificationError):
    """An input that an analyser rejected. `code` is `opaque_target` or `analysis_limit_exceeded`."""

    def __init__(self, message: str, code: str, *, hint: str = "") -> None:
        if code not in _CODES:
            expected = ", ".join(sorted(_CODES))
            error = f"analysis error code {code!r} is invalid; expected one of {expected}"
            raise ValueError(error)
        super().__init__(message, hint=hint)
        self.code = code


class ShellAnalysisError(AnalysisError):
    """A shell command that `analyse_shell` could not parse, or that exceeds its limits."""


class SqlAnalysisError(AnalysisError):
    """SQL text that `analyse_sql` could not parse, or that exceeds its limits."""
