"""Tokens and teacher calls one work item spent: the unit of cost accounting in distill/."""

from __future__ import annotations

import msgspec

from engine.teacher import Usage


class Spend(msgspec.Struct, kw_only=True):
    """Tokens one work item spent, summed over its teacher calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    def add(self, usage: Usage | None) -> None:
        """One teacher call; ``usage`` is None when a backend could not report it."""
        self.calls += 1
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens

    def absorb(self, other: Spend) -> None:
        """Add everything ``other`` spent (its calls included)."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.calls += other.calls

    def __add__(self, other: Spend) -> Spend:
        return Spend(prompt_tokens=self.prompt_tokens + other.prompt_tokens,
                     completion_tokens=self.completion_tokens + other.completion_tokens, calls=self.calls + other.calls)

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}
