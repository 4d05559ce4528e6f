"""OpenAI chat-completions wire format <-> ``engine.records`` types.

The client (``engine.teachers.openai_http``) and the loopback simulator server
(``engine.sim_server``) share these functions so both ends agree on one encoding: tool
call arguments travel as JSON *strings* (the OpenAI convention) and are dicts everywhere
inside the engine. Decoding a reply is strict: anything a caller could not use becomes a
``BadAnswer`` that quotes what the server sent.
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.errors import BadAnswer
from engine.records import FunctionSpec, Message, ToolCall
from engine.teacher import Completion, Usage

_QUOTE = 200  # characters of a bad reply quoted in an error


def quote(text: str | bytes, limit: int = _QUOTE) -> str:
    """The first ``limit`` characters of a reply, for an error message."""
    if isinstance(text, bytes):
        text = text[: limit * 4].decode("utf-8", "replace")
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


# -- engine -> wire ---------------------------------------------------------------------------


def call_to_wire(call: ToolCall, index: int) -> dict[str, Any]:
    return {
        "id": call.id or f"call_{index}",
        "type": "function",
        "function": {"name": call.name, "arguments": orjson.dumps(call.arguments).decode()},
    }


def message_to_wire(msg: Message) -> dict[str, Any]:
    # Plain text turns are the common case; keep them to one dict literal.
    if not msg.tool_calls and msg.tool_call_id is None:
        return {"role": msg.role, "content": msg.content if msg.content is not None else ""}
    out: dict[str, Any] = {"role": msg.role, "content": msg.content}
    if msg.tool_calls:
        out["tool_calls"] = [call_to_wire(c, i) for i, c in enumerate(msg.tool_calls)]
    if msg.tool_call_id is not None:
        out["tool_call_id"] = msg.tool_call_id
        if out["content"] is None:
            out["content"] = ""
    if msg.name is not None:
        out["name"] = msg.name
    return out


def messages_to_wire(messages: list[Message]) -> list[dict[str, Any]]:
    return [message_to_wire(m) for m in messages]


def tools_to_wire(tools: list[FunctionSpec]) -> list[dict[str, Any]]:
    return [t.to_openai_tool() for t in tools]


def completion_to_wire(completion: Completion, *, response_id: str, created: int) -> dict[str, Any]:
    """A chat.completion body; a ``wire_message`` goes out as it is (a server replaying raw output)."""
    if completion.wire_message is not None:
        msg = completion.wire_message
    else:
        msg = message_to_wire(completion.message)
        if "tool_calls" in msg and not msg.get("content"):
            msg["content"] = None
    usage = completion.usage
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": completion.model,
        "choices": [{"index": 0, "message": msg, "finish_reason": completion.finish_reason, "logprobs": None}],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        },
    }


# -- wire -> engine ---------------------------------------------------------------------------


def parse_arguments(raw: Any, name: str) -> dict[str, Any]:
    """Tool-call arguments: a JSON object string (or, from lenient servers, the object itself)."""
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, str):
        raise BadAnswer(f"tool call {name!r} has arguments of type {type(raw).__name__}, expected a JSON string", text=str(raw))
    try:
        args = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadAnswer(f"tool call {name!r} has arguments that are not valid JSON: {quote(raw)}", text=raw) from None
    if not isinstance(args, dict):
        raise BadAnswer(f"tool call {name!r} has arguments that are not a JSON object: {quote(raw)}", text=raw)
    return args


def call_from_wire(raw: Any) -> ToolCall:
    fn = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise BadAnswer(f"tool call without a function name: {quote(orjson.dumps(raw))}", text=str(raw))
    name = fn["name"]
    return ToolCall(name=name, arguments=parse_arguments(fn.get("arguments"), name), id=str(raw.get("id") or ""))


def message_from_wire(raw: Any) -> Message:
    if not isinstance(raw, dict):
        raise BadAnswer(f"message is not an object: {quote(orjson.dumps(raw))}", text=str(raw))
    role = raw.get("role", "assistant")
    if role not in ("system", "user", "assistant", "tool", "developer"):
        raise BadAnswer(f"message has unknown role {role!r}", text=str(raw))
    content = raw.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    elif content is not None and not isinstance(content, str):
        raise BadAnswer(f"message content is of type {type(content).__name__}, expected a string", text=str(content))
    calls = raw.get("tool_calls") or []
    if not isinstance(calls, list):
        raise BadAnswer(f"tool_calls is not a list: {quote(orjson.dumps(calls))}", text=str(calls))
    return Message(
        role="system" if role == "developer" else role,
        content=content,
        tool_calls=[call_from_wire(c) for c in calls],
        tool_call_id=raw.get("tool_call_id"),
        name=raw.get("name"),
    )


def tools_from_wire(raw: Any) -> list[FunctionSpec]:
    if not raw:
        return []
    if not isinstance(raw, list):
        raise BadAnswer("tools is not a list", text=str(raw))
    out = []
    for tool in raw:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadAnswer(f"tool without a function name: {quote(orjson.dumps(tool))}", text=str(tool))
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        out.append(FunctionSpec(name=fn["name"], description=fn.get("description") or "", parameters=params))
    return out


def completion_from_wire(body: Any, raw: bytes = b"") -> Completion:
    """A decoded chat.completion body -> Completion; ``BadAnswer`` names what is missing.

    Finish reasons the engine cannot use are errors here, so every backend reports them alike:
    ``length`` -> BadAnswer("truncated ..."), ``content_filter`` -> BadAnswer("filtered ...").
    Such a BadAnswer carries the body's ``usage``: the tokens were spent even if the answer is lost.
    """
    usage = usage_from_wire(body)
    try:
        return _completion(body, raw, usage)
    except BadAnswer as err:
        err.usage = err.usage or usage
        err.wire_message = _message_dict(body)
        raise


def _message_dict(body: Any) -> dict[str, Any] | None:
    """``choices[0].message`` of a reply body when it is an object, else None."""
    try:
        message = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return None
    return message if isinstance(message, dict) else None


def usage_from_wire(body: Any) -> Usage | None:
    """The body's ``usage`` block, or None when it has none (or is not an object)."""
    usage_raw = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage_raw, dict):
        return None
    return Usage(prompt_tokens=int(usage_raw.get("prompt_tokens") or 0), completion_tokens=int(usage_raw.get("completion_tokens") or 0))


def _completion(body: Any, raw: bytes, usage: Usage | None) -> Completion:
    try:
        choice = body["choices"][0]
        msg_raw = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise BadAnswer(f"reply has no choices[0].message: {quote(raw or orjson.dumps(body))}",
                        text=(raw or b"").decode("utf-8", "replace")[:2000]) from None
    message = message_from_wire(msg_raw)
    finish = choice.get("finish_reason") or "stop"
    if finish == "length":
        raise BadAnswer(f"truncated: the answer hit max_tokens (finish_reason=length): {quote(message.content or '')}", text=message.content or "")
    if finish == "content_filter":
        raise BadAnswer("filtered: the provider's content filter stopped the answer (finish_reason=content_filter)", text=message.content or "")
    if message.content is None and not message.tool_calls:
        raise BadAnswer(f"reply message has neither content nor tool_calls: {quote(raw or orjson.dumps(body))}")
    return Completion(message=message, finish_reason=finish, usage=usage or Usage(), model=str(body.get("model") or ""),
                      wire_message=msg_raw)
