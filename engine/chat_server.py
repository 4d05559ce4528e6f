"""An OpenAI-compatible chat server around any answer function: the one app behind the simulator,
the BFCL replay and the BFCL adversary (start it with ``engine.loopback``).

Routes: POST /v1/chat/completions (non-streaming), GET /v1/models, GET /health. A request body
that is not a chat request is answered 400 ``bad request body``; an answer function's
``BadAnswer`` (a request it cannot answer) is answered 400 with its message. Whatever a server
adds (faults, rate limits, counters) is aiohttp middleware around these routes; a middleware
that must see the request first reads it with ``chat_request``, which parses each request once.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from engine import wire
from engine.errors import BadAnswer
from engine.records import FunctionSpec, Message
from engine.teacher import Completion, Teacher

JSON = "application/json"
CHAT_PATH = "/v1/chat/completions"


class ChatRequest(NamedTuple):
    body: dict[str, Any]  # the decoded JSON body, for fields beyond messages and tools
    messages: list[Message]
    tools: list[FunctionSpec]


class BadRequest(Exception):
    """The body is not a chat request; answered 400."""


Answer = Callable[[ChatRequest], Awaitable[Completion]]
_KEY = web.RequestKey("chat_request", object)  # where a request keeps its parse (or its BadRequest)
_READ_MESSAGE = web.AppKey("read_message", Callable[[Any], Message])


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """An OpenAI-style error body."""
    body = orjson.dumps({"error": {"message": message, "type": code, "code": code}})
    return web.Response(body=body, status=status, content_type=JSON, headers=headers)


async def chat_request(request: web.Request) -> ChatRequest:
    """The request parsed (once: middleware and handler share it); ``BadRequest`` when it is not one."""
    if _KEY not in request:
        read_message = request.app[_READ_MESSAGE]
        try:
            body = orjson.loads(await request.read())
            request[_KEY] = ChatRequest(body, [read_message(m) for m in body["messages"]], wire.tools_from_wire(body.get("tools")))
        except (orjson.JSONDecodeError, KeyError, TypeError, BadAnswer) as err:
            request[_KEY] = BadRequest(f"bad request body: {err}")
    parsed = request[_KEY]
    if isinstance(parsed, BadRequest):
        raise parsed
    return parsed


def teacher_answer(teacher: Teacher) -> Answer:
    """Answer each request with ``teacher.chat``, passing on the request's sampling fields."""
    async def answer(chat: ChatRequest) -> Completion:
        body = chat.body
        return await teacher.chat(chat.messages, chat.tools or None, tool_choice=body.get("tool_choice"),
                                  response_format=body.get("response_format"),
                                  temperature=float(body.get("temperature") or 0.0),
                                  max_tokens=int(body.get("max_tokens") or 512), seed=body.get("seed"))
    return answer


def chat_app(answer: Answer, *, model: str, middlewares: Iterable[Any] = (),
             read_message: Callable[[Any], Message] = wire.message_from_wire) -> web.Application:
    """The app; ``model`` is what /v1/models lists and names the reply ids. ``read_message`` decodes
    a request message (strict by default; a server that must accept what BFCL re-sends passes a
    lenient one). A Completion's ``wire_message``, when set, is sent as is, byte for byte."""
    serial = itertools.count(1)

    async def chat(request: web.Request) -> web.Response:
        try:
            completion = await answer(await chat_request(request))
        except (BadRequest, BadAnswer) as err:
            return error_response(400, "invalid_request_error", str(err))
        payload = wire.completion_to_wire(completion, response_id=f"chatcmpl-{model}-{next(serial)}", created=int(time.time()))
        return web.Response(body=orjson.dumps(payload), content_type=JSON)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "magnet"}]})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 << 20, middlewares=list(middlewares))
    app[_READ_MESSAGE] = read_message
    app.router.add_post(CHAT_PATH, chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    return app
