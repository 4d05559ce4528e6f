"""Ask a teacher for one JSON answer: response_format json_schema when enabled, parsing either way.

Structured outputs (vLLM and OpenAI honour ``json_schema``) keep a small model's format valid;
teachers without them still usually answer JSON when asked, so the reply is always parsed the
same tolerant way: by default the first JSON object in the text that has the required keys.
The graph judges and every distill step that wants JSON (translation, the negatives' judge)
ask through here; re-asking a bad answer is ``engine.retry.with_reasks``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from engine import wire
from engine.errors import BadAnswer
from engine.records import Message
from engine.teacher import Teacher, Usage

_QUOTE = 400  # characters of a bad answer quoted in its error


def response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def first_object(text: str, required: list[str]) -> dict[str, Any] | None:
    """The first JSON object in ``text`` holding every ``required`` key (fences and prose skipped)."""
    decoder = json.JSONDecoder()
    i = text.find("{")
    while i >= 0:
        try:
            value, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(value, dict) and all(k in value for k in required):
            return value
        i = text.find("{", i + 1)
    return None


async def ask_json(
    teacher: Teacher,
    prompt: str,
    schema: dict[str, Any],
    *,
    name: str,
    structured: bool,
    temperature: float,
    max_tokens: int,
    seed: int | None,
    history: list[Message] | None = None,
    on_usage: Callable[[Usage | None], None] | None = None,
    parse: Callable[[str], Any] | None = None,
) -> tuple[Any, str]:
    """(answer, raw text). ``history`` lets a re-ask show the model its previous answer and the
    problem; ``on_usage`` gets each call's usage (None when a backend could not report it), a
    rejected answer's included; ``parse(text)`` replaces the default reading (the first object
    with the schema's required keys) and raises BadAnswer for an answer it cannot read."""
    messages = [Message(role="user", content=prompt), *(history or [])]
    try:
        completion = await teacher.chat(
            messages,
            response_format=response_format(name, schema) if structured else None,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
        )
    except BadAnswer as err:  # a rejected answer still cost tokens
        if on_usage is not None:
            on_usage(err.usage)
        raise
    if on_usage is not None:
        on_usage(completion.usage)
    text = completion.message.content or ""
    if parse is not None:
        return parse(text), text
    obj = first_object(text, list(schema.get("required", [])))
    if obj is None:
        why = "truncated" if completion.finish_reason == "length" else "no JSON object with " + ", ".join(schema.get("required", []))
        raise BadAnswer(f"{name}: {why}: {wire.quote(' '.join(text.split()), _QUOTE)}", text=text)
    return obj, text
