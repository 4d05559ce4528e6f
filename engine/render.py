"""One record, two renderings: the chat a model sees for a stored trajectory.

A record is structured (user queries, ToolCalls, tool outputs, final texts) and carries no
system prompt; how it becomes a chat is a named mode, and training, exports and evaluation
of one model use the same one.

- ``prompt`` (the paper's, the default): exactly what BFCL sends a chat model in prompting
  mode (``OpenAIHandler``, mirrored by bench/bfcl/runner.py ``Conversation``). The system
  message is BFCL's prompt with the offered functions as BFCL docs; an assistant step that
  calls is the Python list ``[f(a=1), g(b='x')]`` and nothing else (BFCL's prompt says "You
  SHOULD NOT include any other text", and its decoder reads the whole answer as the list, so
  text next to the calls is dropped); the outputs of one step come back as ONE user message,
  ``repr`` of ``[{"role": "tool", "name": <call as BFCL's decoder writes it>, "content": ...}]``.
- ``fc``: the chat template's tools block and native ``tool_calls`` / ``tool`` messages, no
  system message (BFCL's FC mode sends none).

Per-turn tools (``Trajectory.turn_tools``): a function withheld on a miss_func turn is absent
until the turn that adds it back, as in BFCL. At that turn the user message is BFCL's
follow-up: in prompt mode the added functions' docs plus "I have updated some more functions
...", in fc mode that sentence while the tools block grows. Prompt mode renders one
conversation. One tokenized FC conversation has one tools block, so a conversation whose
tools grow renders as one ``Segment`` per tools epoch: segment k is the conversation up to the
end of epoch k under epoch k's tools, and only epoch k's assistant messages are trained
(earlier ones are context, already trained in their own segment).

This module is the single home of BFCL's doc dialect and call syntax (engine/export.py and
train/data.py use it; distill may delegate its hint formatting to ``calls_text``).
"""

from __future__ import annotations

import keyword
import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import msgspec

from engine.bfcl_prompts import (
    DEFAULT_SYSTEM_PROMPT,
    DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC,
    DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING,
    PYTHON_HINT,
)
from engine.errors import UserInputError
from engine.records import FunctionSpec, Message, PreferencePair, ToolCall, Trajectory

Mode = Literal["prompt", "fc"]
MODES: tuple[Mode, ...] = ("prompt", "fc")
MODE_HELP = ("how a record becomes a chat: prompt = BFCL's system prompt listing the functions, calls written as "
             "Python text (the paper's; evaluate with BFCL prompt mode); fc = the chat template's tools block and "
             "tool_calls (evaluate with BFCL FC mode)")
_BFCL_TYPES = {"object": "dict", "number": "float"}


class RenderError(ValueError):
    """A record that cannot be rendered in a mode. ``reason`` is a short key for skip counts."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def check_mode(mode: str, flag: str = "--mode") -> Mode:
    if mode not in MODES:
        raise UserInputError(f"{flag} {mode!r} is unknown; use prompt (BFCL's system prompt, calls as Python text; "
                             "the paper's) or fc (the chat template's tools block and tool_calls)")
    return mode  # type: ignore[return-value]


# -- BFCL's function docs -------------------------------------------------------------------------


def bfcl_schema(schema: Any) -> Any:
    """JSON Schema -> BFCL's dialect ("dict" for object, "float" for number), recursively."""
    if isinstance(schema, dict):
        out = {k: bfcl_schema(v) for k, v in schema.items()}
        if isinstance(out.get("type"), str):
            out["type"] = _BFCL_TYPES.get(out["type"], out["type"])
        return out
    if isinstance(schema, list):
        return [bfcl_schema(v) for v in schema]
    return schema


def bfcl_function(spec: FunctionSpec) -> dict[str, Any]:
    """The doc BFCL's data files hold (name, description, parameters, response)."""
    doc: dict[str, Any] = {"name": spec.name, "description": spec.description, "parameters": bfcl_schema(spec.parameters)}
    if isinstance(spec.returns, dict) and spec.returns:
        doc["response"] = bfcl_schema(spec.returns)
    return doc


def system_prompt(functions: Sequence[FunctionSpec]) -> str:
    """BFCL's prompt-mode system prompt: its docs, with the language hint BFCL adds, as Python's str() of the list."""
    docs = [bfcl_function(s) | {"description": s.description + PYTHON_HINT} for s in functions]
    return DEFAULT_SYSTEM_PROMPT.format(functions=docs)


# -- BFCL's call syntax ---------------------------------------------------------------------------


def _check_literal(value: Any, where: str) -> None:
    """Only JSON values, which ``repr`` writes as Python literals that ``ast.literal_eval`` reads back."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RenderError("call not writable as Python", f"{where} is {value!r}, which has no Python literal")
        return
    if isinstance(value, list):
        for v in value:
            _check_literal(v, where)
        return
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        for v in value.values():
            _check_literal(v, where)
        return
    raise RenderError("call not writable as Python", f"{where} holds a {type(value).__name__}, which is not a JSON value")


def _check_call(call: ToolCall) -> None:
    if not all(part.isidentifier() and not keyword.iskeyword(part) for part in call.name.split(".")):
        raise RenderError("call not writable as Python", f"function name {call.name!r} is not a Python name")
    for key, value in call.arguments.items():
        if not key.isidentifier() or keyword.iskeyword(key):
            raise RenderError("call not writable as Python", f"{call.name} argument {key!r} is not a Python keyword argument")
        _check_literal(value, f"{call.name} argument {key}")


def call_text(call: ToolCall) -> str:
    """``name(a=1, b='x')``: keyword arguments, values as Python literals (what BFCL parses with ast).
    Raises RenderError when the call cannot be written so (names that are not Python names)."""
    _check_call(call)
    return f"{call.name}({', '.join(f'{k}={v!r}' for k, v in call.arguments.items())})"


def calls_text(calls: Sequence[ToolCall]) -> str:
    """``[f(a=1), g(b='x')]``: a prompt-mode answer, as BFCL's system prompt asks for it."""
    return "[" + ", ".join(call_text(c) for c in calls) + "]"


def _decoded_value(value: Any) -> str:
    """BFCL's ``parse_nested_value``: its decoder reads a dict whose values are all dicts as a
    nested call ``{'f': {'a': 1}}`` -> ``f(a=1)``; anything else is ``repr``."""
    if isinstance(value, dict):
        if value and all(isinstance(v, dict) for v in value.values()):
            name, args = next(iter(value.items()))
            return f"{name}({', '.join(f'{k}={_decoded_value(v)}' for k, v in args.items())})"
        # (an empty dict makes BFCL's decoder raise; "{}" is what the model wrote)
        return "{" + ", ".join(f"'{k}': {_decoded_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def decoded_call(call: ToolCall) -> str:
    """The call as BFCL's ``decode_execute`` writes it (the ``name`` of its tool-result entry)."""
    _check_call(call)
    return f"{call.name}({', '.join(f'{k}={_decoded_value(v)}' for k, v in call.arguments.items())})"


# -- call ids and pairs -----------------------------------------------------------------------------


def with_call_ids(messages: Sequence[Message]) -> list[Message]:
    """Give every tool call an id and every tool answer the id of the call it answers.

    Calls without an id get ``call_<message>_<index>``; a tool message without
    ``tool_call_id`` answers the next unanswered call of the latest assistant message.
    """
    out: list[Message] = []
    pending: list[ToolCall] = []
    for i, msg in enumerate(messages):
        if msg.role == "assistant" and msg.tool_calls:
            calls = [c if c.id else msgspec.structs.replace(c, id=f"call_{i}_{j}") for j, c in enumerate(msg.tool_calls)]
            msg = msgspec.structs.replace(msg, tool_calls=calls)
            pending = list(calls)
        elif msg.role == "tool":
            if msg.tool_call_id:
                pending = [c for c in pending if c.id != msg.tool_call_id]
            elif pending:
                call = pending.pop(0)
                msg = msgspec.structs.replace(msg, tool_call_id=call.id, name=msg.name or call.name)
        out.append(msg)
    return out


def conversation(messages: Sequence[Message]) -> list[Message]:
    """The record's turns with call ids: a leading system message (records written before the
    system prompt moved to the mode) is dropped."""
    start = 1 if messages and messages[0].role == "system" else 0
    return with_call_ids(messages[start:])


def _same(a: Message, b: Message) -> bool:
    """Equal as a model sees them: call ids are bookkeeping, not content."""
    return (a.role, a.content, [(c.name, c.arguments) for c in a.tool_calls]) == (
        b.role, b.content, [(c.name, c.arguments) for c in b.tool_calls])


def split_pair(pair: PreferencePair) -> tuple[list[Message], list[Message], list[Message]] | None:
    """(shared prefix, chosen rest, rejected rest) of the record messages, or None when the sides
    do not part at an assistant message."""
    chosen, rejected = conversation(pair.chosen.messages), conversation(pair.rejected.messages)
    k = 0
    while k < min(len(chosen), len(rejected)) and _same(chosen[k], rejected[k]):
        k += 1
    if k >= len(chosen) or k >= len(rejected) or chosen[k].role != "assistant" or rejected[k].role != "assistant":
        return None
    return chosen[:k], chosen[k:], rejected[k:]


# -- rendering --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """One rendered conversation: its messages, its tools block (fc; empty in prompt mode, where
    the functions are in the system message) and which messages are trained."""

    messages: list[Message]
    tools: list[FunctionSpec]
    trained: list[bool]

    @property
    def first_trained(self) -> int | None:
        return next((i for i, t in enumerate(self.trained) if t), None)


def offered_per_turn(tools: Sequence[FunctionSpec], turn_tools: Sequence[Sequence[str]], n_turns: int,
                     record_id: str = "") -> list[list[FunctionSpec]]:
    """The functions offered at each user turn, in the order offered. Functions are only ever
    added back (BFCL's protocol), never taken away."""
    if not turn_tools:
        return [list(tools)] * max(n_turns, 1)
    if len(turn_tools) < n_turns:
        raise RenderError("turn_tools inconsistent", f"{record_id} has {n_turns} user turns but turn_tools for {len(turn_tools)}")
    by_name = {s.name: s for s in tools}
    out: list[list[FunctionSpec]] = []
    for turn, names in enumerate(turn_tools[:max(n_turns, 1)]):
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise RenderError("turn_tools inconsistent", f"{record_id} turn {turn} offers {unknown}, which are not in its tools")
        dropped = [s.name for s in out[-1] if s.name not in names] if out else []
        if dropped:
            raise RenderError("turn_tools inconsistent", f"{record_id} turn {turn} takes back {dropped}; BFCL only adds functions")
        out.append([by_name[n] for n in names])
    return out


def _restoring_text(query: str | None, added: list[FunctionSpec], mode: Mode) -> str:
    """BFCL's follow-up at a turn that adds functions back (prompt: their raw docs, without the
    language hint, as BFCL formats its held-out docs); a query other than BFCL's sentence follows it."""
    text = (DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING.format(functions=[bfcl_function(s) for s in added])
            if mode == "prompt" else DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC)
    return text if query in (None, "", DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC) else f"{text}\n\n{query}"


def _tool_results(group: list[Message], calls: dict[str, ToolCall], record_id: str) -> Message:
    """One step's outputs as BFCL's prompt mode returns them: one user message."""
    results = []
    for msg in group:
        call = calls.get(msg.tool_call_id or "")
        if call is None:
            raise RenderError("tool output answers no call", f"{record_id} has a tool message that answers no earlier call")
        results.append({"role": "tool", "name": decoded_call(call), "content": msg.content or ""})
    return Message(role="user", content=repr(results))


def render_messages(tools: Sequence[FunctionSpec], turn_tools: Sequence[Sequence[str]], messages: Sequence[Message],
                    mode: Mode, *, record_id: str = "") -> list[Segment]:
    """Render record messages (a whole conversation or a prefix of one) in ``mode``."""
    msgs = conversation(messages)
    offered = offered_per_turn(tools, turn_tools, sum(m.role == "user" for m in msgs), record_id)
    out: list[Message] = [Message(role="system", content=system_prompt(offered[0]))] if mode == "prompt" else []
    epoch_of: list[int] = [0] * len(out)
    epochs = [0]  # first user turn of each tools epoch
    calls: dict[str, ToolCall] = {}
    turn, i = -1, 0
    while i < len(msgs):
        msg = msgs[i]
        if msg.role == "user":
            turn += 1
            before = {s.name for s in offered[turn - 1]} if turn else {s.name for s in offered[0]}
            added = [s for s in offered[turn] if s.name not in before]
            if added:
                epochs.append(turn)
            out.append(Message(role="user", content=_restoring_text(msg.content, added, mode) if added else msg.content or ""))
        elif msg.role == "tool" and mode == "prompt":
            group = [msg]
            while i + 1 < len(msgs) and msgs[i + 1].role == "tool":
                i += 1
                group.append(msgs[i])
            out.append(_tool_results(group, calls, record_id))
        elif msg.role == "assistant" and mode == "prompt":
            calls.update((c.id, c) for c in msg.tool_calls)
            out.append(Message(role="assistant", content=calls_text(msg.tool_calls) if msg.tool_calls else msg.content or ""))
        else:
            if msg.role == "tool" and not msg.tool_call_id:
                raise RenderError("tool output answers no call", f"{record_id} has a tool message that answers no earlier call")
            out.append(msg)
        epoch_of.append(len(epochs) - 1)
        i += 1
    if mode == "prompt":
        return [Segment(out, [], [m.role == "assistant" for m in out])]
    segments = []
    for k, first_turn in enumerate(epochs):
        end = epoch_of.index(k + 1) if k + 1 < len(epochs) else len(out)
        trained = [m.role == "assistant" and epoch_of[j] == k for j, m in enumerate(out[:end])]
        segments.append(Segment(out[:end], offered[first_turn], trained))
    return segments


def render(traj: Trajectory, mode: Mode) -> list[Segment]:
    """A trajectory in ``mode``: one segment in prompt mode, one per tools epoch in fc mode."""
    return render_messages(traj.tools, traj.turn_tools, traj.messages, mode, record_id=traj.id)


@dataclass(frozen=True, slots=True)
class PairRendering:
    """A pair cut at its first differing assistant message (what DPO formats take)."""

    prompt: list[Message]
    chosen: Message
    rejected: Message
    tools: list[FunctionSpec]  # fc: the tools of the epoch where the sides part


def render_pair(pair: PreferencePair, mode: Mode) -> PairRendering | None:
    """The shared prompt (system message included in prompt mode) and each side's first
    differing assistant message; None when the sides do not part at an assistant message."""
    split = split_pair(pair)
    if split is None:
        return None
    prefix, chosen, rejected = split
    good = render_messages(pair.chosen.tools, pair.chosen.turn_tools, prefix + chosen[:1], mode, record_id=pair.chosen.id)[-1]
    bad = render_messages(pair.rejected.tools, pair.rejected.turn_tools, prefix + rejected[:1], mode, record_id=pair.rejected.id)[-1]
    return PairRendering(good.messages[:-1], good.messages[-1], bad.messages[-1], good.tools)


def parting_segments(pair: PreferencePair, mode: Mode) -> tuple[Segment, Segment, bool] | None:
    """Each side, whole, in the segment where the sides part (prompt mode: the whole
    conversation), and whether later tools epochs were left out; None when they do not part at
    an assistant message."""
    split = split_pair(pair)
    if split is None:
        return None
    prefix, chosen, _ = split
    epoch = len(render_messages(pair.chosen.tools, pair.chosen.turn_tools, prefix + chosen[:1], mode, record_id=pair.chosen.id)) - 1
    good, bad = render(pair.chosen, mode), render(pair.rejected, mode)
    return good[epoch], bad[epoch], len(good) > epoch + 1 or len(bad) > epoch + 1
