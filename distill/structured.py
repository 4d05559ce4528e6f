"""Ask a teacher for one JSON object: response_format json_schema when enabled, parsing either way.

Structured outputs (vLLM and OpenAI honour ``json_schema``) keep a small model's format valid;
teachers without them still usually answer JSON when asked, so the reply is always parsed the
same tolerant way: the first JSON object in the text that has the required keys.
"""

from __future__ import annotations

import json
from typing import Any


from distill.parsers import quote
from engine.errors import BadAnswer
from distill.spend import Spend
from engine.records import Message
from engine.teacher import Teacher


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
    spend: Spend,
    structured: bool,
    temperature: float,
    max_tokens: int,
    seed: int | None,
    history: list[Message] | None = None,
) -> tuple[dict[str, Any], str]:
    """(object, raw text). ``history`` lets a retry show the model its previous answer and the problem."""
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
        spend.add(err.usage)
        raise
    spend.add(completion.usage)
    text = completion.message.content or ""
    obj = first_object(text, list(schema.get("required", [])))
    if obj is None:
        why = "truncated" if completion.finish_reason == "length" else "no JSON object with " + ", ".join(schema.get("required", []))
        raise BadAnswer(f"{name}: {why}: {quote(text)!r}", text=text)
    return obj, text
