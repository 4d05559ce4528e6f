"""Roll an episode out with a model: user turns in order, one assistant step at a time, every
call it makes executed for real on a fresh toolkit runtime and its output fed back.

The same loop serves the hinted teacher (positives), the student without hints (mining), the
student with misleading hints (mined negatives) and the teacher continuing a conversation
from a perturbed turn (perturbed negatives). Hints are appended to the user message the model
sees and never to the stored messages: that is the context distillation.

A hint lists the turn's reference calls as BFCL call lists, one list per step: calls in one
list are independent and belong in one assistant message (parallel calls); " then " separates
steps that need the outputs of the step before (nested calls).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import msgspec

from distill.call_grammar import answer_regex
from distill.parsers import format_bfcl, validate_call
from distill.spend import Spend
from engine.errors import BadAnswer
from engine.records import Episode, EpisodeTurn, FunctionSpec, Message, ToolCall
from engine.render import Mode, render_messages
from engine.retry import with_reasks
from engine.teacher import Teacher
from graph.schema import ArgumentError
from graph.toolkit import ToolPool, ToolResult, ToolRuntime

MISS_HINTS = {"miss_func": "miss function", "miss_param": "miss param"}
STEP_SEPARATOR = " then "
# Kinds whose calls of a turn are independent by construction (BFCL's parallel categories).
PARALLEL_KINDS = ("single", "parallel", "multiple", "parallel_multiple")

Parse = Callable[[Message, dict[str, FunctionSpec]], list[ToolCall]]


class TurnLog(msgspec.Struct, kw_only=True):
    """What happened in one user turn of a rollout."""

    calls: list[ToolCall] = []  # validated calls, in the order executed
    results: list[ToolResult] = []  # one per call
    steps: list[int] = []  # calls per assistant message, in order (parallel calls share a message)
    text: str = ""  # the assistant's final plain-text reply of the turn
    snapshot: dict[str, Any] = {}  # toolkit state after the turn
    errors: list[str] = []  # unparsable answers, invalid calls, step limit


class Rollout(msgspec.Struct, kw_only=True):
    messages: list[Message]  # as stored: user, assistant and tool messages; no hints, no system prompt
    tools: list[FunctionSpec]  # in the (shuffled) order offered
    turn_tools: list[list[str]]  # names offered at each user turn
    hints: list[str]
    turns: list[TurnLog]
    spend: Spend


class RolloutParams(msgspec.Struct, kw_only=True):
    """How one rollout samples; the same for each of its steps."""

    mode: Mode = "fc"  # how the model is sent the conversation (engine/render.py): its tools block, or BFCL's prompt
    instructions: str = ""  # added to the system message the model is sent (hint instructions); never stored
    seed: int = 0
    temperature: float = 0.0
    retry_temperature: float = 0.7  # re-asks of an unparsable answer sample at this temperature
    max_tokens: int = 512
    max_steps: int = 6  # assistant messages allowed per user turn, the final text included
    answer_retries: int = 2  # re-asks of one step whose answer cannot be parsed
    grammar: bool = False  # prompt mode: a model served with regex outputs answers a call list or text (call_grammar.py)


# -- hints ----------------------------------------------------------------------------------------


def _scalars(value: Any) -> set[str]:
    """String forms of the scalar leaves of a JSON value (values short enough to be ids are skipped)."""
    if isinstance(value, dict):
        return set().union(*(_scalars(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_scalars(v) for v in value)) if value else set()
    if isinstance(value, bool) or value is None:
        return set()
    text = str(value)
    return {text} if len(text) >= 3 else set()


def call_steps(turn: EpisodeTurn, kind: str) -> list[list[ToolCall]]:
    """The turn's reference calls grouped into steps: a call waits for an earlier call of the
    turn when one of its argument values is among that call's output values."""
    if kind in PARALLEL_KINDS or len(turn.calls) < 2:
        return [list(turn.calls)] if turn.calls else []
    step_of: list[int] = []
    for j, call in enumerate(turn.calls):
        wanted = _scalars(call.arguments)
        after = [step_of[i] + 1 for i in range(j) if i < len(turn.outputs) and wanted & _scalars(turn.outputs[i])]
        step_of.append(max(after, default=0))
    steps: list[list[ToolCall]] = [[] for _ in range(max(step_of) + 1)]
    for call, s in zip(turn.calls, step_of):
        steps[s].append(call)
    return [s for s in steps if s]


def reference_hint(turn: EpisodeTurn, kind: str) -> str:
    """``[Hint]`` content for a turn: the reference calls step by step, or the miss label."""
    if turn.label in MISS_HINTS:
        return MISS_HINTS[turn.label]
    return STEP_SEPARATOR.join(format_bfcl(step) for step in call_steps(turn, kind))


def with_hint(query: str, hint: str | None) -> str:
    return f"{query}\n\n[Hint]: {hint}" if hint else query


# -- tools ----------------------------------------------------------------------------------------


def fresh_runtime(pool: ToolPool, episode: Episode) -> ToolRuntime:
    return pool.instantiate(episode.initial_state, seed=episode.seed, only=episode.toolkits)


def shuffled_tools(episode: Episode, seed: int) -> list[FunctionSpec]:
    """The paper shuffles the order of the functions offered, so position carries no signal."""
    tools = list(episode.tools)
    random.Random(f"tools|{episode.id}|{seed}").shuffle(tools)
    return tools


def offered_per_turn(episode: Episode, tools: list[FunctionSpec]) -> list[list[str]]:
    """Names offered at each user turn. As in BFCL's miss_func entries, a withheld function is
    absent from the first turn through its miss turn and added back, after the others, at the
    turn after it."""
    until: dict[str, int] = {}
    for h, turn in enumerate(episode.turns):
        if turn.label == "miss_func":
            for name in turn.missing:
                until[name] = h
    always = [t.name for t in tools if t.name not in until]
    added = sorted((t.name for t in tools if t.name in until), key=lambda n: until[n])
    return [always + [n for n in added if until[n] < h] for h in range(len(episode.turns))]


def output_text(result: ToolResult) -> str:
    """A tool message's content: the JSON output, or the error as an API would report it."""
    if result.ok:
        return json.dumps(result.output, ensure_ascii=False, sort_keys=True)
    return f"Error: {result.error}"


# -- the loop -------------------------------------------------------------------------------------


class _Conversation:
    """One rollout in progress: the runtime, what is stored, what the model is sent."""

    def __init__(self, model: Teacher, episode: Episode, pool: ToolPool, params: RolloutParams, parse: Parse,
                 tools: list[FunctionSpec]):
        self.model, self.params, self.parse = model, params, parse
        self.runtime = fresh_runtime(pool, episode)
        self.tools = tools
        self.specs = {t.name: t for t in tools}
        self.turn_tools = offered_per_turn(episode, tools)
        self.stored: list[Message] = []
        self.sent: list[Message] = []  # the stored messages, with the hints in the user messages
        self.logs: list[TurnLog] = []
        self.spend = Spend()

    def replay(self, prefix: Rollout, turns: int) -> None:
        """Take the first ``turns`` user turns of ``prefix`` as they are, re-executing their calls
        so the runtime reaches the same state."""
        seen = -1
        for m in prefix.messages:
            seen += m.role == "user"
            if seen >= turns:
                break
            self.stored.append(m)
            hint = prefix.hints[seen] if m.role == "user" and seen < len(prefix.hints) else None
            self.sent.append(Message(role="user", content=with_hint(m.content or "", hint)) if m.role == "user" else m)
        for log in prefix.turns[:turns]:
            for call in log.calls:
                self.runtime.execute(call)
            self.logs.append(log)

    def request(self, offered: list[FunctionSpec]) -> tuple[list[Message], list[FunctionSpec] | None]:
        """What the model is sent: the conversation in the rollout's mode, the instructions added to
        the system message (prompt mode: BFCL's, listing the functions; fc: their own)."""
        p = self.params
        if p.mode == "fc":
            system = [Message(role="system", content=p.instructions)] if p.instructions else []
            return system + self.sent, offered or None
        messages = render_messages(self.tools, self.turn_tools, self.sent, "prompt")[0].messages
        if p.instructions:
            messages[0] = Message(role="system", content=f"{messages[0].content}\n\n{p.instructions}")
        return messages, None

    async def ask(self, h: int, step: int, offered: list[FunctionSpec]) -> tuple[Message, list[ToolCall]] | str:
        """The model's next message and its parsed calls, or the error after the retries."""
        p = self.params
        messages, tools = self.request(offered)
        # Only the form is forced (offered names and parameters, literal values); verification decides the rest.
        constrained = p.mode == "prompt" and p.grammar and getattr(self.model, "regex_outputs", False)
        response_format = {"type": "regex", "regex": answer_regex(offered)} if constrained else None

        async def once(attempt: int, last: BadAnswer | None) -> tuple[Message, list[ToolCall]]:
            try:  # a backend may itself reject a truncated or garbled answer with BadAnswer
                completion = await self.model.chat(
                    messages, tools=tools, tool_choice="auto" if tools else None, response_format=response_format,
                    temperature=p.temperature if attempt == 0 else p.retry_temperature, max_tokens=p.max_tokens,
                    seed=p.seed * 1000 + h * 50 + step * 5 + attempt)
            except BadAnswer as err:
                if err.usage is not None:  # the backend rejected the answer: its tokens were spent all the same
                    self.spend.add(err.usage)
                raise
            self.spend.add(completion.usage)
            return completion.message, self.parse(completion.message, self.specs)

        try:
            return await with_reasks(once, attempts=p.answer_retries + 1)
        except BadAnswer as err:
            return f"turn {h} step {step}: {err}"

    async def act(self, h: int, step: int, calls: list[ToolCall], offered: dict[str, FunctionSpec], log: TurnLog) -> None:
        """Store the calls as one assistant message, execute each for real, feed the outputs back."""
        checked: list[tuple[ToolCall, str | None]] = []
        for call in calls:
            try:
                checked.append((validate_call(call, offered), None))
            except ArgumentError as err:
                checked.append((call, f"{call.name}: {err}"))
        ids = [f"call_{h}_{step}_{i}" for i in range(len(calls))]
        assistant = Message(role="assistant", tool_calls=[
            ToolCall(name=c.name, arguments=c.arguments, id=i) for (c, _), i in zip(checked, ids)])
        self.stored.append(assistant)
        self.sent.append(assistant)
        log.steps.append(len(calls))
        for (call, invalid), call_id in zip(checked, ids):
            if invalid is None:
                result = await self.runtime.aexecute(call)
            else:
                result = ToolResult(ok=False, error=invalid)
                log.errors.append(f"turn {h}: invalid call {invalid}")
            log.calls.append(call)
            log.results.append(result)
            tool_msg = Message(role="tool", content=output_text(result), tool_call_id=call_id, name=call.name)
            self.stored.append(tool_msg)
            self.sent.append(tool_msg)

    async def turn(self, h: int, query: str, hint: str | None) -> TurnLog:
        self.stored.append(Message(role="user", content=query))
        self.sent.append(Message(role="user", content=with_hint(query, hint)))
        offered = [self.specs[n] for n in self.turn_tools[h]]
        offered_specs = {t.name: t for t in offered}
        log = TurnLog()
        for step in range(self.params.max_steps):
            answer = await self.ask(h, step, offered)
            if isinstance(answer, str):
                log.errors.append(answer)
                break
            message, calls = answer
            if not calls:
                log.text = (message.content or "").strip()
                reply = Message(role="assistant", content=log.text)
                self.stored.append(reply)
                self.sent.append(reply)
                break
            await self.act(h, step, calls, offered_specs, log)
        else:
            log.errors.append(f"turn {h}: no final answer within {self.params.max_steps} steps")
        log.snapshot = self.runtime.snapshot()
        return log


async def roll_out(model: Teacher, episode: Episode, pool: ToolPool, hints: list[str | None] | None,
                   params: RolloutParams, parse: Parse, *, prefix: Rollout | None = None,
                   from_turn: int = 0) -> Rollout:
    """One conversation. ``parse(message, specs) -> list[ToolCall]`` raises BadAnswer on garbage.

    With ``prefix``, its first ``from_turn`` user turns are kept as they are (same tool order,
    same messages) and the model continues from there: a rejected trajectory that parts from
    the chosen one at ``from_turn`` and stays consistent with its own tool outputs after it."""
    tools = list(prefix.tools) if prefix is not None else shuffled_tools(episode, params.seed)
    convo = _Conversation(model, episode, pool, params, parse, tools)
    if prefix is not None:
        convo.replay(prefix, from_turn)
    hint_texts = [(hints[h] if hints is not None else None) or "" for h in range(len(episode.turns))]
    for h in range(len(convo.logs), len(episode.turns)):
        log = await convo.turn(h, episode.turns[h].query, hint_texts[h] or None)
        convo.logs.append(log)
        if log.errors:
            break  # the conversation has gone off the rails; later turns would only add noise
    return Rollout(messages=convo.stored, tools=tools, turn_tools=convo.turn_tools, hints=hint_texts,
                   turns=convo.logs, spend=convo.spend)
