"""Roll an episode out with a model: user turns in order, one assistant step at a time, every
call it makes executed for real on a fresh toolkit runtime and its output fed back.

The same loop serves the hinted teacher (positives), the student without hints (mining) and
the student with misleading hints (mined negatives). Hints are appended to the user message
the model sees and never to the stored messages: that is the context distillation.
"""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec

from distill.parsers import format_bfcl, validate_call
from distill.structured import Spend
from engine import metrics
from engine.errors import BadAnswer
from engine.records import Episode, EpisodeTurn, FunctionSpec, Message, ToolCall
from engine.teacher import Teacher
from graph.schema import ArgumentError
from graph.toolkit import ToolPool, ToolResult, ToolRuntime

MISS_HINTS = {"miss_func": "miss function", "miss_param": "miss param"}


class TurnLog(msgspec.Struct, kw_only=True):
    """What happened in one user turn of a rollout."""

    calls: list[ToolCall] = []  # validated calls, in the order executed
    results: list[ToolResult] = []  # one per call
    text: str = ""  # the assistant's final plain-text reply of the turn
    snapshot: dict[str, Any] = {}  # toolkit state after the turn
    errors: list[str] = []  # unparsable answers, invalid calls, step limit


class Rollout(msgspec.Struct, kw_only=True):
    messages: list[Message]  # as stored: hints removed
    tools: list[FunctionSpec]  # in the (shuffled) order offered
    hints: list[str]
    turns: list[TurnLog]
    spend: Spend


def reference_hint(turn: EpisodeTurn) -> str:
    """``[Hint]`` content for a turn: the reference calls, or the miss label."""
    return MISS_HINTS[turn.label] if turn.label in MISS_HINTS else format_bfcl(turn.calls)


def with_hint(query: str, hint: str | None) -> str:
    return f"{query}\n\n[Hint]: {hint}" if hint else query


def fresh_runtime(pool: ToolPool, episode: Episode) -> ToolRuntime:
    return pool.instantiate(episode.initial_state, seed=episode.seed, only=episode.toolkits)


def shuffled_tools(episode: Episode, seed: int) -> list[FunctionSpec]:
    """The paper shuffles the order of the functions offered, so position carries no signal."""
    tools = list(episode.tools)
    random.Random(f"tools|{episode.id}|{seed}").shuffle(tools)
    return tools


def turn_tools(tools: list[FunctionSpec], turn: EpisodeTurn) -> list[FunctionSpec]:
    """The functions offered in a turn: a miss_func turn withholds the missing ones."""
    if turn.label != "miss_func":
        return tools
    return [t for t in tools if t.name not in set(turn.missing)]


def output_text(result: ToolResult) -> str:
    """A tool message's content: the JSON output, or the error as an API would report it."""
    if result.ok:
        return json.dumps(result.output, ensure_ascii=False, sort_keys=True)
    return f"Error: {result.error}"


async def roll_out(
    teacher: Teacher,
    episode: Episode,
    pool: ToolPool,
    *,
    system_prompt: str,
    hint_instructions: str,
    hints: list[str | None] | None,
    parse: Any,
    seed: int,
    temperature: float,
    max_tokens: int,
    max_steps: int,
    answer_retries: int,
    retry_temperature: float,
) -> Rollout:
    """One full conversation. ``parse(message, specs) -> list[ToolCall]`` raises BadAnswer on garbage.

    The model sees ``system_prompt`` plus ``hint_instructions``; the stored conversation keeps only
    ``system_prompt``, so nothing about hints reaches the training data."""
    runtime = fresh_runtime(pool, episode)
    tools = shuffled_tools(episode, seed)
    specs = {t.name: t for t in tools}
    stored: list[Message] = [Message(role="system", content=system_prompt)]
    sent: list[Message] = [Message(role="system", content=f"{system_prompt}\n\n{hint_instructions}" if hint_instructions else system_prompt)]
    spend = Spend()
    logs: list[TurnLog] = []
    hint_texts: list[str] = []
    for h, turn in enumerate(episode.turns):
        hint = hints[h] if hints is not None else None
        hint_texts.append(hint or "")
        stored.append(Message(role="user", content=turn.query))
        sent.append(Message(role="user", content=with_hint(turn.query, hint)))
        offered = turn_tools(tools, turn)
        offered_specs = {t.name: t for t in offered}
        log = TurnLog()
        logs.append(log)
        for step in range(max_steps + 1):
            if step == max_steps:
                log.errors.append(f"turn {h}: no final answer within {max_steps} steps")
                break
            message = None
            for attempt in range(answer_retries + 1):
                try:  # a backend may itself reject a truncated or garbled answer with BadAnswer
                    completion = await teacher.chat(
                        sent,
                        tools=offered or None,
                        tool_choice="auto" if offered else None,
                        temperature=temperature if attempt == 0 else retry_temperature,
                        max_tokens=max_tokens,
                        seed=seed * 1000 + h * 50 + step * 5 + attempt,
                    )
                    spend.add(completion.usage)
                    calls = parse(completion.message, specs)
                    message = completion.message
                    break
                except BadAnswer as err:
                    if err.usage is not None:  # the backend rejected the answer: its tokens were spent all the same
                        spend.add(err.usage)
                    last_error = err
                    metrics.METRICS.retries += 1
            if message is None:
                log.errors.append(f"turn {h} step {step}: {last_error}")
                break
            if not calls:
                log.text = (message.content or "").strip()
                stored.append(Message(role="assistant", content=log.text))
                sent.append(Message(role="assistant", content=log.text))
                break
            checked: list[tuple[ToolCall, str | None]] = []
            for call in calls:
                try:
                    checked.append((validate_call(call, offered_specs), None))  # stored coerced: "3" -> 3
                except ArgumentError as err:
                    checked.append((call, f"{call.name}: {err}"))
            ids = [f"call_{h}_{step}_{i}" for i in range(len(calls))]
            assistant = Message(role="assistant", tool_calls=[
                ToolCall(name=c.name, arguments=c.arguments, id=i) for (c, _), i in zip(checked, ids)])
            stored.append(assistant)
            sent.append(assistant)
            for (call, invalid), call_id in zip(checked, ids):
                if invalid is None:
                    result = await runtime.aexecute(call)
                else:
                    result = ToolResult(ok=False, error=invalid)
                    log.errors.append(f"turn {h}: invalid call {invalid}")
                log.calls.append(call)
                log.results.append(result)
                tool_msg = Message(role="tool", content=output_text(result), tool_call_id=call_id, name=call.name)
                stored.append(tool_msg)
                sent.append(tool_msg)
        log.snapshot = runtime.snapshot()
        if log.errors:
            break  # the conversation has gone off the rails; later turns would only add noise
    return Rollout(messages=stored, tools=tools, hints=hint_texts, turns=logs, spend=spend)
