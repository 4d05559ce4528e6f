"""A model server answering BFCL entries with a fixed mix of right, wrong and malformed outputs.

It exists to check that our harness stores what BFCL's own generator stores and that our verdicts
equal BFCL's on the outputs where the two could part: arithmetic inside prompt-mode arguments
(BFCL evaluates it), tool-call arguments "" or invalid JSON (BFCL keeps them as sent), an empty
``tool_calls`` list, a message without content, a truncated answer. Each answer is one of
``PROMPT_VARIANTS`` / ``FC_VARIANTS``, picked by the entry's number and the turn, so every
category gets the whole mix over a handful of entries, and both harnesses get the same answer to
the same request. The right answer is the ground-truth replay's (``replay.ReplayTeacher``).

Multi-turn: the chosen variant answers a turn's first step; once calls were executed, the next
step is the replay's no-call text, which ends the turn. The server writes its replies as raw
OpenAI JSON (arguments strings byte for byte) and reads requests leniently: BFCL re-sends the
model's own messages, invalid arguments included.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from bench.bfcl.data import Dataset, category_of, is_multi_turn
from bench.bfcl.replay import NO_CALL_TEXT, ReplayTeacher, _is_results, _multi_turn_calls, _relevance_call
from engine import wire
from engine.chat_server import ChatRequest, chat_app
from engine.records import Message
from engine.teacher import Completion, Usage

Calls = list[tuple[str, dict[str, Any]]]

PROMPT_VARIANTS = ["right", "arithmetic", "wrong_value", "name_in_arithmetic", "syntax_error", "no_call",
                   "truncated", "division_by_zero", "bare_call"]
FC_VARIANTS = ["right", "spaced_json", "empty_arguments", "invalid_json_in_one_call", "empty_tool_calls",
               "no_call", "wrong_value", "no_content", "truncated", "empty_object"]


def _ordinal(entry_id: str) -> int:
    """The entry's number in its category: simple_12 -> 12, live_simple_3-2-0 -> 3."""
    return int(entry_id.rsplit("_", 1)[1].split("-")[0])


def _arithmetic(value: Any) -> str:
    """Python source for ``value`` written as arithmetic that evaluates to it."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, str) and len(value) > 1:
        return f"{value[:1]!r} + {value[1:]!r}"  # "New " + "York"
    if isinstance(value, int):
        return f"{value + 1} - 1"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value!r} * 1"
    if isinstance(value, list) and value:
        return f"{value[:1]!r} + {value[1:]!r}"  # [1] + [2]
    return repr(value)


def _wrong(calls: Calls) -> Calls:
    """The calls with the first argument's value changed (or an extra argument when there is none)."""
    if not calls:
        return calls
    (name, args), rest = calls[0], calls[1:]
    if not args:
        return [(name, {"unexpected": 1}), *rest]
    key, value = next(iter(args.items()))
    changed = value + "_x" if isinstance(value, str) else not value if isinstance(value, bool) else \
        value + 7 if isinstance(value, (int, float)) else [] if value else [1]
    return [(name, {**args, key: changed}), *rest]


class AdversaryTeacher:
    """Chooses and writes the answer (a raw OpenAI message) to a request for ``dataset``'s entries."""

    def __init__(self, dataset: Dataset, mode: str):
        self.mode = mode
        self.replay = ReplayTeacher(dataset, mode)
        self.ground_truth = dataset.ground_truth
        self.variants = FC_VARIANTS if mode == "fc" else PROMPT_VARIANTS
        self.used: dict[str, set[str]] = {}  # category -> variants answered (a test checks the mix)

    def answer(self, messages: list[Message], tools: list[Any] | None) -> tuple[dict[str, Any], str]:
        """(the assistant message as raw OpenAI JSON, finish_reason)."""
        entry = self.replay.identify(messages, tools)
        category = category_of(entry["id"])
        turn = sum(1 for m in messages if m.role == "user" and not _is_results(m)) - 1
        if is_multi_turn(category):
            if _is_results(messages[-1]):  # its calls ran: end the turn
                return {"role": "assistant", "content": NO_CALL_TEXT}, "stop"
            right = _multi_turn_calls(entry, self.ground_truth[entry["id"]][turn])
        else:
            right = self.replay.answer(entry, messages)
        variant = self._variant(entry["id"], turn)
        self.used.setdefault(category, set()).add(variant)
        # the calls to make wrong or malformed: where the right answer is no call (irrelevance), a call of the first function
        calls = right or ([] if is_multi_turn(category) else _relevance_call(entry))
        if self.mode == "fc":
            return self._fc(entry, variant, right, calls)
        return self._prompt(entry, variant, right, calls)

    def _variant(self, entry_id: str, turn: int) -> str:
        number = _ordinal(entry_id)
        if is_multi_turn(category_of(entry_id)) and number % 2 == 0:
            # every other multi-turn entry stays right: turns alternate the right answer and its
            # arithmetic (prompt) / re-spaced JSON (FC) form, which BFCL also counts right
            return self.variants[turn % 2]
        return self.variants[(number + turn) % len(self.variants)]

    def _text(self, entry: dict[str, Any], calls: Calls) -> str:
        return self.replay.message_for(entry, calls).content or ""

    def _prompt(self, entry: dict[str, Any], variant: str, right: Calls, calls: Calls) -> tuple[dict[str, Any], str]:
        text, finish = self._text(entry, right), "stop"
        if variant == "arithmetic" and calls:
            text = "[" + ", ".join(f"{n}({', '.join(f'{k}={_arithmetic(v)}' for k, v in a.items())})" for n, a in calls) + "]"
        elif variant == "wrong_value":
            text = self._text(entry, _wrong(calls))
        elif variant == "name_in_arithmetic" and calls:
            text = f"[{calls[0][0]}(value=undefined_name + 1)]"
        elif variant == "syntax_error":
            text = self._text(entry, calls)[:-2]
        elif variant == "no_call":
            text = "I cannot help with that."
        elif variant == "truncated":
            text, finish = self._text(entry, calls)[: max(1, len(self._text(entry, calls)) // 2)], "length"
        elif variant == "division_by_zero" and calls:
            text = f"[{calls[0][0]}(value=1/0)]"
        elif variant == "bare_call" and calls:
            text = f"{calls[0][0]}(value=+5, nested=inner(1 + 2))"  # no brackets; BFCL reads +5 as -5
        return {"role": "assistant", "content": text}, finish

    def _fc(self, entry: dict[str, Any], variant: str, right: Calls, calls: Calls) -> tuple[dict[str, Any], str]:
        def tool_calls(chosen: Calls) -> list[dict[str, Any]]:
            return wire.message_to_wire(self.replay.message_for(entry, chosen)).get("tool_calls") or []

        if variant == "right":
            message = wire.message_to_wire(self.replay.message_for(entry, right))
            if message.get("tool_calls"):
                message["content"] = None
            return message, "tool_calls" if right else "stop"
        if variant in ("no_call", "empty_tool_calls"):
            message = {"role": "assistant", "content": "I cannot help with that."}
            if variant == "empty_tool_calls":
                message["tool_calls"] = []  # what vLLM sends with a text answer; BFCL then stores []
            return message, "stop"
        if variant == "no_content":
            return {"role": "assistant", "content": None}, "stop"
        raw = tool_calls(_wrong(calls) if variant == "wrong_value" else calls)
        for call in raw:
            args = call["function"]["arguments"]
            if variant == "spaced_json":
                call["function"]["arguments"] = orjson.dumps(orjson.loads(args), option=orjson.OPT_INDENT_2).decode()
            elif variant == "empty_arguments":
                call["function"]["arguments"] = ""
            elif variant == "empty_object":
                call["function"]["arguments"] = "{}"
            elif variant == "truncated":
                call["function"]["arguments"] = args[: len(args) // 2]
        if variant == "invalid_json_in_one_call" and raw:
            raw.append({"id": f"call_{len(raw)}", "type": "function",
                        "function": {"name": raw[0]["function"]["name"], "arguments": '{"value": '}})
        return {"role": "assistant", "content": None, "tool_calls": raw}, "length" if variant == "truncated" else "tool_calls"


def _lenient_message(raw: dict[str, Any]) -> Message:
    """Role and text of a request message; tool calls are not needed to pick the answer."""
    content = raw.get("content")
    role = raw.get("role", "user")
    return Message(role=role if role in ("system", "user", "assistant", "tool") else "system",
                   content=content if isinstance(content, str) else None)


def build_adversary_app(adversary: AdversaryTeacher) -> web.Application:
    async def answer(chat: ChatRequest) -> Completion:
        message, finish = adversary.answer(chat.messages, chat.tools or None)
        # The raw message goes out byte for byte; ``message`` only satisfies the record type.
        return Completion(message=Message(role="assistant"), wire_message=message, finish_reason=finish,
                          usage=Usage(prompt_tokens=10, completion_tokens=5), model="adversary")

    return chat_app(answer, model="adversary", read_message=_lenient_message)
