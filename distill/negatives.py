"""Rejected trajectories for preference pairs.

Mined (the paper's way, MAGNET_METHOD §6.2): the student rolls out without hints several
times; the judge marks its wrong turns by the paper's five error types; the student rolls out
again with those wrong calls as hints, which yields a realistic mistake -> rejected.

Perturbed (cheap, before a student exists): a rule picks other calls for one turn; the
teacher continues the positive's conversation from that turn with those calls as its hint,
so the wrong calls execute for real and everything after them (the turn's summary, later
turns) is written by the model from the outputs the wrong calls really returned. Rules and
the error type each makes: wrong_value (a stated value changed: wrong_value), missing_nested
(the call that needs a same-turn output left out: nested), dropped_call (one of independent
calls left out: missed_function_or_param), broken_dependency (a value from an output
replaced: short_dependency or long_dependency by where it came from), call_on_miss (a call
where the turn needs none: missed_function_or_param).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgspec

from distill.parsers import format_bfcl
from distill.rollout import Rollout, reference_hint
from distill.spend import Spend
from distill.translate import output_values
from engine.errors import BadAnswer
from engine.records import Episode, EpisodeTurn, ToolCall
from engine.structured import ask_json
from engine.teacher import Teacher
from graph.toolkit import ToolPool


class Change(msgspec.Struct, kw_only=True):
    """A perturbation: the calls one turn gets instead of its reference calls, and the error it makes."""

    turn: int
    calls: list[ToolCall]
    error_type: str


ERROR_TYPES = {1: "nested", 2: "short_dependency", 3: "long_dependency", 4: "summarization", 5: "missed_function_or_param"}

JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"verdicts": {"type": "array", "items": {
        "type": "object",
        "properties": {"turn": {"type": "integer"}, "wrong": {"type": "boolean"},
                       "error_type": {"type": "integer", "enum": [0, 1, 2, 3, 4, 5]}, "reason": {"type": "string"}},
        "required": ["turn", "wrong", "error_type", "reason"], "additionalProperties": False}}},
    "required": ["verdicts"],
    "additionalProperties": False,
}


# ------------------------------------------------------------------------------ perturbations


def _other_value(value: Any, rng: random.Random, enum: list[Any] | None = None) -> Any:
    """A plausible but different value of the same type."""
    if enum and len(enum) > 1:
        return rng.choice([e for e in enum if e != value])
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + rng.choice([1, 2, 7, -1]) if value > 1 else value + rng.choice([1, 2, 7])
    if isinstance(value, float):
        return round(value * rng.choice([0.5, 1.5, 2.0]) + 1.0, 2)
    if isinstance(value, str):
        return value[:-1] + ("X" if not value.endswith("X") else "Y") if value else "unknown"
    if isinstance(value, list):
        return value[:-1] if value else value
    return value


def _perturb_value(call: ToolCall, name: str, pool: ToolPool, rng: random.Random) -> ToolCall:
    schema = pool.spec(call.name).parameters.get("properties", {}).get(name, {})
    args = dict(call.arguments)
    args[name] = _other_value(args[name], rng, schema.get("enum"))
    return ToolCall(name=call.name, arguments=args)


def _same_turn_sources(turn: EpisodeTurn, i: int) -> set[str]:
    """Scalar output values of the calls before call ``i`` in its own turn."""
    out: set[str] = set()
    for o in turn.outputs[:i]:
        for values in output_values([o]).values():
            out.update(str(v) for v in values)
    return out


def rule_missing_nested(episode: Episode, pool: ToolPool, rng: random.Random) -> Change | None:
    """Leave out a call that needs an earlier call's output in the same turn (the implicit one)."""
    spots = [(h, i) for h, t in enumerate(episode.turns) for i, c in enumerate(t.calls)
             if i > 0 and any(str(v) in _same_turn_sources(t, i) for v in c.arguments.values())]
    if not spots:
        return None
    h, i = rng.choice(spots)
    calls = list(episode.turns[h].calls)
    del calls[i]
    return Change(turn=h, calls=calls, error_type="nested")


def rule_dropped_call(episode: Episode, pool: ToolPool, rng: random.Random) -> Change | None:
    """Leave out one of several independent calls of a turn (one of parallel calls, one intent of two)."""
    spots = [(h, i) for h, t in enumerate(episode.turns) for i, c in enumerate(t.calls)
             if len(t.calls) >= 2 and not any(str(v) in _same_turn_sources(t, i) for v in c.arguments.values())]
    if not spots:
        return None
    h, i = rng.choice(spots)
    calls = list(episode.turns[h].calls)
    del calls[i]
    return Change(turn=h, calls=calls, error_type="missed_function_or_param")


def _guess(schema: dict[str, Any], name: str) -> Any:
    """A value a model might make up for a parameter it has no value for."""
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    return {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}.get(schema.get("type"), f"my {name.replace('_', ' ')}")


def rule_call_on_miss(episode: Episode, pool: ToolPool, rng: random.Random) -> Change | None:
    """Call on a miss turn instead of asking / saying a function is missing: the restoring turn's
    call with a guessed value (miss_param), the withheld function (miss_func), or an offered but
    unrelated function with made-up arguments (irrelevance)."""
    spots = [h for h, t in enumerate(episode.turns) if t.label != "call"]
    if not spots:
        return None
    h = rng.choice(spots)
    turn = episode.turns[h]
    follow = episode.turns[h + 1] if h + 1 < len(episode.turns) else None
    if follow is not None and follow.calls:
        calls = list(follow.calls)
        if turn.label == "miss_param":
            for i, c in enumerate(calls):
                if turn.missing and turn.missing[0] in c.arguments:
                    calls[i] = _perturb_value(c, turn.missing[0], pool, rng)
                    break
        return Change(turn=h, calls=calls[:1], error_type="missed_function_or_param")
    offered = [t for t in episode.tools if t.name not in turn.missing]
    if not offered:
        return None
    spec = rng.choice(offered)
    props = spec.parameters.get("properties", {})
    args = {p: _guess(props.get(p, {}), p) for p in spec.parameters.get("required", [])}
    return Change(turn=h, calls=[ToolCall(name=spec.name, arguments=args)], error_type="missed_function_or_param")


def _value_spots(episode: Episode) -> list[tuple[int, int, str, str]]:
    """(turn, call, argument, where the value came from: user | short_dependency | long_dependency)."""
    spots, earlier = [], []
    for h, turn in enumerate(episode.turns):
        before_turn = output_values(earlier)
        for i, call in enumerate(turn.calls):
            same = _same_turn_sources(turn, i)
            for k, v in call.arguments.items():
                if v is None:  # an explicit null is not a value to get wrong
                    continue
                source = ("short_dependency" if str(v) in same else
                          "long_dependency" if v in before_turn.get(k, ()) else "user")
                spots.append((h, i, k, source))
        earlier += turn.outputs
    return spots


def _changed(episode: Episode, pool: ToolPool, rng: random.Random, spots: list[tuple[int, int, str, str]],
             error_type: str | None) -> Change | None:
    if not spots:
        return None
    h, i, k, source = rng.choice(spots)
    calls = list(episode.turns[h].calls)
    calls[i] = _perturb_value(calls[i], k, pool, rng)
    return Change(turn=h, calls=calls, error_type=error_type or source)


def rule_broken_dependency(episode: Episode, pool: ToolPool, rng: random.Random) -> Change | None:
    """A value that came from an earlier output replaced by one that did not: short dependency when
    the output was the same turn's, long when it was an earlier turn's."""
    return _changed(episode, pool, rng, [s for s in _value_spots(episode) if s[3] != "user"], None)


def rule_wrong_value(episode: Episode, pool: ToolPool, rng: random.Random) -> Change | None:
    """A value the user stated, changed: none of the paper's five types, so labelled as what it is."""
    return _changed(episode, pool, rng, [s for s in _value_spots(episode) if s[3] == "user"], "wrong_value")


RULES: dict[str, Callable[[Episode, ToolPool, random.Random], Change | None]] = {
    "wrong_value": rule_wrong_value,
    "missing_nested": rule_missing_nested,
    "dropped_call": rule_dropped_call,
    "broken_dependency": rule_broken_dependency,
    "call_on_miss": rule_call_on_miss,
}


def wrong_hints(episode: Episode, change: Change) -> list[str]:
    """Reference hints on every turn but the changed one, which gets the wrong calls: the model
    continuing from that turn makes the mistake and lives with its consequences."""
    hints = [reference_hint(t, episode.kind) for t in episode.turns]
    changed = EpisodeTurn(query="", calls=change.calls, outputs=[], label="call")
    hints[change.turn] = reference_hint(changed, episode.kind) if change.calls else "no call needed; answer in text"
    return hints


# ------------------------------------------------------------------------------ mined


def judge_turns_text(episode: Episode, rollout: Rollout) -> str:
    blocks = []
    for h, (turn, log) in enumerate(zip(episode.turns, rollout.turns)):
        ref = format_bfcl(turn.calls) if turn.calls else f"(no call: {turn.label})"
        got = format_bfcl(log.calls) if log.calls else "(no call)"
        blocks.append(
            f"Turn {h}\nUser: {turn.query}\nREFERENCE calls: {ref}\nREFERENCE outputs: {turn.outputs}\n"
            f"MODEL calls: {got}\nMODEL reply: {log.text or '(none)'}")
    return "\n\n".join(blocks)


class Verdict(msgspec.Struct, kw_only=True):
    turn: int
    error_type: str
    reason: str = ""


async def judge(teacher: Teacher, prompt: str, n_turns: int, *, spend: Spend, structured: bool, max_tokens: int,
                seed: int) -> list[Verdict]:
    obj, text = await ask_json(teacher, prompt, JUDGE_SCHEMA, name="judge_errors", on_usage=spend.add, structured=structured,
                               temperature=0.0, max_tokens=max_tokens, seed=seed)
    verdicts = obj.get("verdicts")
    if not isinstance(verdicts, list):
        raise BadAnswer("judge: 'verdicts' is not a list", text=text)
    out = []
    for v in verdicts:
        if not isinstance(v, dict) or not v.get("wrong"):
            continue
        turn, kind = v.get("turn"), v.get("error_type")
        if isinstance(turn, int) and 0 <= turn < n_turns and kind in ERROR_TYPES:
            out.append(Verdict(turn=turn, error_type=ERROR_TYPES[kind], reason=str(v.get("reason", ""))[:300]))
    return out


def misleading_hints(episode: Episode, rollout: Rollout, verdicts: list[Verdict]) -> list[str]:
    """The student's wrong calls as hints on the judged turns; the reference elsewhere, so the
    rejected trajectory differs from the chosen one where the mistake is."""
    wrong = {v.turn for v in verdicts}
    hints = []
    for h, turn in enumerate(episode.turns):
        if h in wrong and h < len(rollout.turns):
            log = rollout.turns[h]
            hints.append(format_bfcl(log.calls) if log.calls else "no call needed; answer in text")
        else:
            hints.append(reference_hint(turn, episode.kind))
    return hints
