"""Rejected trajectories for preference pairs.

Mined (the paper's way, MAGNET_METHOD §6.2): the student rolls out without hints several
times; the judge marks its wrong turns by the paper's five error types; the student rolls out
again with those wrong calls as hints, which yields a realistic mistake -> rejected.

Perturbed (cheap, before a student exists): a rule changes the positive's calls in one turn
and the conversation is replayed for real on a fresh runtime, so the tool outputs are what
the wrong calls really return. Rules: wrong_value, missing_nested, broken_dependency,
call_on_miss. Each is labelled ``perturbed:<rule>`` with its error type.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgspec

from distill.parsers import format_bfcl
from distill.rollout import Rollout, TurnLog, fresh_runtime, output_text, reference_hint
from distill.structured import Spend, ask_json
from distill.translate import output_values
from engine.errors import BadAnswer
from engine.records import Episode, Message, ToolCall, Trajectory
from engine.teacher import Teacher
from graph.toolkit import ToolPool

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


def _change_one(episode: Episode, spots: list[tuple[int, int, str]], pool: ToolPool,
                rng: random.Random) -> tuple[int, list[ToolCall]] | None:
    """Turn and its calls with one (turn, call, argument) spot given another value."""
    if not spots:
        return None
    h, i, k = rng.choice(spots)
    calls = list(episode.turns[h].calls)
    calls[i] = _perturb_value(calls[i], k, pool, rng)
    return h, calls


def rule_wrong_value(episode: Episode, pool: ToolPool, rng: random.Random) -> tuple[int, list[ToolCall]] | None:
    spots = [(h, i, k) for h, t in enumerate(episode.turns) for i, c in enumerate(t.calls) for k in c.arguments]
    return _change_one(episode, spots, pool, rng)


def rule_missing_nested(episode: Episode, pool: ToolPool, rng: random.Random) -> tuple[int, list[ToolCall]] | None:
    spots = [h for h, t in enumerate(episode.turns) if len(t.calls) >= 2]
    if not spots:
        return None
    h = rng.choice(spots)
    return h, list(episode.turns[h].calls[:-1])


def rule_broken_dependency(episode: Episode, pool: ToolPool, rng: random.Random) -> tuple[int, list[ToolCall]] | None:
    """A value that came from an earlier output replaced by one that did not."""
    spots, earlier = [], []
    for h, turn in enumerate(episode.turns):
        for i, call in enumerate(turn.calls):
            values = output_values(earlier)
            spots += [(h, i, k) for k, v in call.arguments.items() if v in values.get(k, ())]
            earlier.append(turn.outputs[i] if i < len(turn.outputs) else None)
    return _change_one(episode, spots, pool, rng)


def _guess(schema: dict[str, Any], name: str) -> Any:
    """A value a model might make up for a parameter it has no value for."""
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    return {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}.get(schema.get("type"), f"my {name.replace('_', ' ')}")


def rule_call_on_miss(episode: Episode, pool: ToolPool, rng: random.Random) -> tuple[int, list[ToolCall]] | None:
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
        return h, calls[:1]
    offered = [t for t in episode.tools if t.name not in turn.missing]
    if not offered:
        return None
    spec = rng.choice(offered)
    props = spec.parameters.get("properties", {})
    args = {p: _guess(props.get(p, {}), p) for p in spec.parameters.get("required", [])}
    return h, [ToolCall(name=spec.name, arguments=args)]


RULES: dict[str, tuple[Callable[..., tuple[int, list[ToolCall]] | None], str]] = {
    "wrong_value": (rule_wrong_value, "missed_function_or_param"),
    "missing_nested": (rule_missing_nested, "nested"),
    "broken_dependency": (rule_broken_dependency, "long_dependency"),
    "call_on_miss": (rule_call_on_miss, "missed_function_or_param"),
}


def replay_with(positive: Trajectory, rollout: Rollout, episode: Episode, pool: ToolPool, turn: int,
                calls: list[ToolCall]) -> tuple[list[Message], list[TurnLog]]:
    """The positive conversation with ``turn``'s calls replaced, every call re-executed for real.
    Other turns repeat the positive's calls; their outputs may now differ, or fail."""
    runtime = fresh_runtime(pool, episode)
    messages = [positive.messages[0]]
    logs = []
    for h, (turn_msg, log) in enumerate(zip(_turn_slices(positive.messages), rollout.turns)):
        messages.append(turn_msg[0])
        new_log = TurnLog(text=log.text)
        steps = [[c] for c in calls] if h == turn else [[c] for c in log.calls]
        for s, step in enumerate(steps):
            ids = [f"call_{h}_{s}_{i}" for i in range(len(step))]
            messages.append(Message(role="assistant", tool_calls=[ToolCall(name=c.name, arguments=c.arguments, id=i) for c, i in zip(step, ids)]))
            for c, cid in zip(step, ids):
                result = runtime.execute(c)
                new_log.calls.append(c)
                new_log.results.append(result)
                messages.append(Message(role="tool", content=output_text(result), tool_call_id=cid, name=c.name))
        messages.append(Message(role="assistant", content=log.text))
        new_log.snapshot = runtime.snapshot()
        logs.append(new_log)
    return messages, logs


def _turn_slices(messages: list[Message]) -> list[list[Message]]:
    """Messages after the system prompt, grouped per user turn (each slice starts with the user message)."""
    slices: list[list[Message]] = []
    for m in messages[1:]:
        if m.role == "user":
            slices.append([m])
        elif slices:
            slices[-1].append(m)
    return slices


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
    obj, text = await ask_json(teacher, prompt, JUDGE_SCHEMA, name="judge_errors", spend=spend, structured=structured,
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
            hints.append(reference_hint(turn))
    return hints
