"""Errors with a fixed meaning across the project.

``UserInputError`` is bad input from the user (config, spec, shard, tool definition): the CLI
prints its message as one line and exits 2. Its message names the input and the fix.

Teacher errors say how the engine should react: retry after a delay, retry a bad answer a
bounded number of times, or give up at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.teacher import Usage


class UserInputError(Exception):
    """Bad input; message is one line naming the input and how to fix it."""


class TeacherError(Exception):
    """Base of everything a teacher call can raise."""


class RetryableError(TeacherError):
    """Transient: 429, 5xx, timeout, connection error. ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class RateLimited(RetryableError):
    """HTTP 429 (or a provider's equivalent)."""


class BadAnswer(TeacherError):
    """The reply arrived but is unusable (unparsable, truncated, filtered). Retried up to a limit,
    then dead-lettered. ``text`` quotes what the model wrote; ``usage`` is what the reply
    consumed when the server reported it (a truncated answer still costs its tokens), else None."""

    def __init__(self, message: str, *, text: str = "", usage: Usage | None = None):
        super().__init__(message)
        self.text = text
        self.usage = usage


class FatalTeacherError(TeacherError):
    """Not worth retrying: auth failure, 400 bad request, unknown model, unreachable config."""


class JobFailed(Exception):
    """A work item that cannot finish. The scheduler turns it into a DeadLetter with this
    ``stage`` and ``attempts``; any other exception from a job is dead-lettered the same way
    with the scheduler's default stage and attempts=1."""

    def __init__(self, message: str, *, stage: str, attempts: int = 1):
        super().__init__(message)
        self.stage = stage
        self.attempts = attempts
