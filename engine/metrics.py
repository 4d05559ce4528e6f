"""Counters every teacher and the scheduler update, and the progress display reads.

One process-wide ``METRICS`` object keeps the hot path to a few integer additions; the
progress view derives rates from two snapshots instead of timing every request.
"""

from __future__ import annotations

import time

import msgspec


class Metrics(msgspec.Struct, kw_only=True):
    started_at: float = msgspec.field(default_factory=time.monotonic)
    requests: int = 0  # completed teacher calls (any outcome)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rate_limited: int = 0  # 429 answers received
    retries: int = 0  # transport or bad-answer retries
    items_done: int = 0  # work items committed
    items_failed: int = 0  # work items dead-lettered
    items_skipped: int = 0  # work items already done in an earlier run (resume)
    in_flight: int = 0  # work items currently running
    cost_usd: float = 0.0  # estimated from per-token prices when a teacher has them

    def record_usage(self, prompt_tokens: int, completion_tokens: int, *, price_in: float = 0.0, price_out: float = 0.0) -> None:
        """Add one finished request; prices are USD per 1M tokens."""
        self.requests += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost_usd += (prompt_tokens * price_in + completion_tokens * price_out) / 1e6

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def summary(self) -> dict[str, float | int]:
        elapsed = max(self.elapsed(), 1e-9)
        out = msgspec.structs.asdict(self)
        out.pop("started_at")
        out["wall_s"] = round(elapsed, 3)
        out["requests_per_s"] = round(self.requests / elapsed, 3)
        out["tokens_per_s"] = round((self.prompt_tokens + self.completion_tokens) / elapsed, 3)
        out["cost_usd"] = round(self.cost_usd, 6)
        return out


METRICS = Metrics()


def reset_metrics() -> Metrics:
    """Zero the shared counters in place (a new run, or a test); importers keep a valid reference."""
    for field, value in msgspec.structs.asdict(Metrics()).items():
        setattr(METRICS, field, value)
    return METRICS
