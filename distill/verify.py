"""State-based verification of a rollout against its episode's reference, in BFCL's manner.

The reference calls are replayed on a fresh runtime turn by turn; after each turn the
rollout's toolkit state must equal the reference state, and every reference output must be
among the rollout's outputs of that turn (BFCL's state and response checks). On top: every
call parsed, fitted its schema and executed without error, a miss turn made no call, each turn
ends in a text answer, and that text has no failure phrase.

Data gates, so that what is stored teaches the right thing: no trace of a hint in any stored
message (the word, or the hinted call list quoted); every argument value grounded in the
user's words or an earlier tool output (distill/grounding.py); the calls of a parallel turn
made together in one assistant message.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import msgspec

from distill.grounding import conversation_gaps
from distill.rollout import PARALLEL_KINDS, Rollout, fresh_runtime
from engine.records import Episode, Verification
from graph.toolkit import ToolPool


class ReferenceTurn(msgspec.Struct, kw_only=True):
    outputs: list[Any]
    snapshot: dict[str, Any]


def canonical(value: Any) -> str:
    """A comparable form of a JSON value: key order and int/float spelling do not matter."""
    return msgspec.json.encode(_normal(value)).decode()


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def replay_reference(pool: ToolPool, episode: Episode) -> list[ReferenceTurn]:
    """Execute the reference calls on a fresh runtime; the per-turn states a rollout must reach."""
    runtime = fresh_runtime(pool, episode)
    turns = []
    for turn in episode.turns:
        outputs = []
        for call in turn.calls:
            result = runtime.execute(call)
            if not result.ok:
                raise ValueError(f"reference call {call.name} of episode {episode.id} fails on replay: {result.error}")
            outputs.append(result.output)
        turns.append(ReferenceTurn(outputs=outputs, snapshot=runtime.snapshot()))
    return turns


def failure_phrase(text: str, phrases: list[str]) -> str | None:
    lowered = text.lower()
    for phrase in phrases:
        if re.search(rf"(?<!\w){re.escape(phrase.lower())}(?!\w)", lowered):
            return phrase
    return None


HINT_WORD = re.compile(r"\bhint(s|ed)?\b", re.I)


def leaked_hint(rollout: Rollout) -> str | None:
    """The first stored message that shows a hint: the word, or a hint's call list quoted."""
    hints = [h for h in rollout.hints if len(h) >= 12]
    for m in rollout.messages:
        text = m.content or ""
        if HINT_WORD.search(text):
            return f"a {m.role} message mentions the hint: {text[:80]!r}"
        if m.role == "assistant" and any(h in text for h in hints):
            return f"an assistant message quotes its hint: {text[:80]!r}"
    return None


def data_gates(rollout: Rollout, episode: Episode) -> list[str]:
    errors = []
    leak = leaked_hint(rollout)
    if leak:
        errors.append(f"hint leak: {leak}")
    gaps = conversation_gaps(rollout.messages, {t.name: t for t in rollout.tools})
    if gaps:
        errors.append(f"ungrounded argument value: {gaps[0]} is in no user message or earlier output")
    if episode.kind in PARALLEL_KINDS:
        for h, log in enumerate(rollout.turns):
            if len(log.calls) >= 2 and len(log.steps) > 1:
                errors.append(f"turn {h}: {len(log.calls)} independent calls made in {len(log.steps)} messages, not together")
    return errors


def verify(rollout: Rollout, episode: Episode, reference: list[ReferenceTurn], failure_phrases: list[str]) -> Verification:
    v = Verification(ok=True)
    errors: list[str] = []
    if len(rollout.turns) < len(episode.turns):
        errors.append(f"stopped after {len(rollout.turns)} of {len(episode.turns)} turns")
    for h, (log, turn, ref) in enumerate(zip(rollout.turns, episode.turns, reference)):
        for err in log.errors:
            errors.append(err)
            if "invalid call" in err:
                v.schema_valid = False
            else:
                v.parsed = False
        failed = [r.error for r in log.results if not r.ok]
        if failed:
            v.executed = False
            errors.append(f"turn {h}: call failed: {failed[0]}")
        if turn.label != "call" and log.calls:
            errors.append(f"turn {h}: {turn.label} turn, but the model called {log.calls[0].name}")
            v.state_match = False
        if log.snapshot != ref.snapshot:
            v.state_match = False
            errors.append(f"turn {h}: toolkit state differs from the reference")
        got = Counter(canonical(r.output) for r in log.results if r.ok)
        missing = Counter(canonical(o) for o in ref.outputs) - got
        if missing:
            v.outputs_match = False
            errors.append(f"turn {h}: {sum(missing.values())} reference output(s) not produced")
        if not log.text and not log.errors:
            errors.append(f"turn {h}: no text answer at the end of the turn")
        phrase = failure_phrase(log.text, failure_phrases)
        if phrase:
            errors.append(f"turn {h}: final text has failure phrase {phrase!r}")
    errors += data_gates(rollout, episode)
    v.errors = errors
    v.ok = not errors
    return v
