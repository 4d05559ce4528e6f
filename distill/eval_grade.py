"""Grade one evaluated episode: pass, or the first wrong step and why.

What a model under test is held to, turn by turn in order (the first turn that fails one check
is the episode's first wrong step, the first check it fails its reason):

- ``unparsable`` / ``invalid_call`` / ``step_limit``: every answer parses, every call names an
  offered function and fits its schema, every turn ends in a text answer within the step limit
  (the rollout stops at such a turn, as generation does);
- ``call_not_expected``: a miss_func, miss_param or irrelevance turn makes no call;
- ``state``: after the turn the toolkit state equals the reference's (BFCL's state check);
- ``outputs``: every reference output of the turn is among the model's outputs (BFCL's
  response check: a read-only call must be made, with the right arguments);
- ``ungrounded``: every argument value is in a user message or an earlier tool output. A guess
  that happens to be right is still a guess; reports also give the score without this check.

These are ``distill.verify.verify``'s state, output and no-call checks. Not held, because they
exist to keep training data clean: hint leaks (no hints are given), failure phrases in the final
text, a call that failed on the way (BFCL judges the end state), parallel calls spread over
several messages.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from distill.grounding import conversation_gaps
from distill.parsers import format_bfcl
from distill.rollout import Rollout
from distill.verify import ReferenceTurn, canonical
from engine.records import Episode, Message, ToolCall, Verification

REASONS: dict[str, str] = {
    "unparsable": "an answer that does not parse as calls or text",
    "invalid_call": "a call of an unknown function, or arguments that do not fit its schema",
    "step_limit": "no final answer within the step limit",
    "call_not_expected": "a call on a miss_func, miss_param or irrelevance turn",
    "state": "toolkit state after the turn differs from the reference",
    "outputs": "a reference output not produced (a read-only call missing or with other arguments)",
    "ungrounded": "an argument value in no user message or earlier output (a guess)",
    "stopped": "the conversation ended before the last turn",
    "model_error": "the model's server rejected the request (dead letter)",
}
_CLIP = 160


class Grade(msgspec.Struct, kw_only=True):
    passed: bool
    reason: str = ""  # a REASONS key when failed
    turn: int = -1  # the first wrong turn (0-based) when failed
    detail: str = ""

    def verification(self, rollout: Rollout) -> Verification:
        """The stored form: the flags, and one error line ``turn H: reason: detail``."""
        r = self.reason
        return Verification(ok=self.passed, parsed=r != "unparsable", schema_valid=r != "invalid_call",
                            executed=all(res.ok for log in rollout.turns for res in log.results),
                            state_match=r not in ("state", "call_not_expected"), outputs_match=r != "outputs",
                            errors=[] if self.passed else [f"turn {self.turn}: {r}: {self.detail}"])


def clip(text: str, limit: int = _CLIP) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_difference(expected: Any, got: Any, where: str = "") -> str:
    """Where two JSON states first differ: ``banking.accounts[2].balance: 80 (expected 100)``."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(set(expected) | set(got), key=str):
            if key not in got:
                return f"{where}.{key}: missing (expected {clip(canonical(expected[key]), 60)})".lstrip(".")
            if key not in expected:
                return f"{where}.{key}: {clip(canonical(got[key]), 60)} (expected absent)".lstrip(".")
            if canonical(expected[key]) != canonical(got[key]):
                return first_difference(expected[key], got[key], f"{where}.{key}")
    elif isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        for i, (e, g) in enumerate(zip(expected, got)):
            if canonical(e) != canonical(g):
                return first_difference(e, g, f"{where}[{i}]")
    return f"{where.lstrip('.') or 'state'}: {clip(canonical(got), 60)} (expected {clip(canonical(expected), 60)})"


def turn_spans(messages: list[Message]) -> list[list[Message]]:
    """A stored conversation split per user turn: each list starts with its user message."""
    spans: list[list[Message]] = []
    for m in messages:
        if m.role == "user" or not spans:
            spans.append([])
        spans[-1].append(m)
    return spans


def said(span: list[Message]) -> str:
    """What the model did in one turn: its calls as a BFCL list, else its text."""
    calls = [ToolCall(name=c.name, arguments=c.arguments) for m in span if m.role == "assistant" for c in m.tool_calls]
    if calls:
        return clip(format_bfcl(calls), 300)
    text = next((m.content for m in reversed(span) if m.role == "assistant" and m.content), "")
    return clip(f"(no call) {text}".strip(), 300)


def expected_text(episode: Episode, turn: int) -> str:
    if not 0 <= turn < len(episode.turns):
        return ""
    t = episode.turns[turn]
    return clip(format_bfcl(t.calls), 300) if t.calls else f"(no call: {t.label})"


def _error_reason(error: str) -> str:
    if "invalid call" in error:
        return "invalid_call"
    return "step_limit" if "no final answer within" in error else "unparsable"


def grade(rollout: Rollout, episode: Episode, reference: list[ReferenceTurn]) -> Grade:
    specs = {t.name: t for t in rollout.tools}
    spans = turn_spans(rollout.messages)
    for h, (log, turn, ref) in enumerate(zip(rollout.turns, episode.turns, reference)):
        if log.errors:
            return Grade(passed=False, reason=_error_reason(log.errors[0]), turn=h, detail=clip(log.errors[0]))
        if turn.label != "call" and log.calls:
            return Grade(passed=False, reason="call_not_expected", turn=h, detail=f"{turn.label} turn, but it called {log.calls[0].name}")
        if log.snapshot != ref.snapshot:
            return Grade(passed=False, reason="state", turn=h, detail=first_difference(ref.snapshot, log.snapshot))
        missing = Counter(canonical(o) for o in ref.outputs) - Counter(canonical(r.output) for r in log.results if r.ok)
        if missing:
            return Grade(passed=False, reason="outputs", turn=h,
                         detail=f"{sum(missing.values())} of {len(ref.outputs)} reference outputs not produced, e.g. {clip(next(iter(missing)), 80)}")
        # Earlier turns had no gap (else we returned there): any gap up to here is this turn's.
        gaps = conversation_gaps([m for span in spans[: h + 1] for m in span], specs)
        if gaps:
            return Grade(passed=False, reason="ungrounded", turn=h, detail=f"{gaps[0]} is in no user message or earlier output")
    if len(rollout.turns) < len(episode.turns):
        return Grade(passed=False, reason="stopped", turn=len(rollout.turns), detail=f"{len(rollout.turns)} of {len(episode.turns)} turns")
    return Grade(passed=True)
