"""Errors with a fixed meaning across the project.

``UserInputError`` is bad input from the user (config, spec, shard, tool definition): the CLI
prints its message as one line and exits 2. Its message names the input and the fix.

Teacher errors say how the engine should react: retry after a delay, retry a bad answer a
bounded number of times, or give up at once. ``failure_kind`` sorts a failed item into a data
failure (dead letter) or an infrastructure failure (left pending for the next run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

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
    consumed when the server reported it (a truncated answer still costs its tokens), else None.
    ``wire_message`` is the reply's assistant message as the server sent it, when it had one."""

    wire_message: dict | None = None

    def __init__(self, message: str, *, text: str = "", usage: Usage | None = None):
        super().__init__(message)
        self.text = text
        self.usage = usage


class FatalTeacherError(TeacherError):
    """Not worth retrying: auth failure, 400 bad request, unknown model, unreachable config.
    ``status`` is the HTTP status when a server answered, else None (a backend that failed to start)."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class TeacherUnavailable(Exception):
    """The run stopped early because the teacher is down or refuses every request (the circuit
    breaker tripped). Nothing was lost: the failed items stay pending for the next run. The CLI
    prints the message as one line and exits 3."""


# A fatal answer with one of these statuses concerns the request itself (too long, malformed for
# this one prompt): the item is at fault, not the teacher, so it is dead-lettered like a bad answer.
REQUEST_FAULT_STATUSES = frozenset({400, 413, 422})

FailureKind = Literal["data", "outage", "refused"]


def failure_kind(exc: BaseException) -> FailureKind:
    """How the scheduler treats a failed item.

    ``data``: the item's own fault (an answer that cannot be verified, a rejected prompt): dead-letter it.
    ``outage``: the teacher was unreachable or overloaded through every retry (connection refused,
    DNS, timeouts, 5xx, 429): leave the item pending; many in a row trip the circuit breaker.
    ``refused``: the server refuses every request (401/403, 402, unknown model): leave the item
    pending and stop the run at once. A fatal error without a status (a local backend that would
    not start or failed to generate) counts as an outage instead: if it concerns one item only,
    the breaker's run of consecutive failures resets and the other items go on.
    An explicit ``raise ... from`` cause is followed, so a wrapped outage is still an outage.
    """
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, RetryableError):
            return "outage"
        if isinstance(err, FatalTeacherError):
            if err.status is None:
                return "outage"
            return "data" if err.status in REQUEST_FAULT_STATUSES else "refused"
        err = err.__cause__
    return "data"


class JobFailed(Exception):
    """A work item that cannot finish. The scheduler turns it into a DeadLetter with this
    ``stage`` and ``attempts``; any other exception from a job is dead-lettered the same way
    with the scheduler's default stage and attempts=1."""

    def __init__(self, message: str, *, stage: str, attempts: int = 1):
        super().__init__(message)
        self.stage = stage
        self.attempts = attempts
