"""Child of tests/test_engine_vllm_inproc.py: ``VLLMInprocTeacher`` on SmolLM2 in a process of its
own (vLLM's engine core is a spawned process, which needs this ``__main__`` guard). Prints one
JSON line per check for the test to assert on."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import metrics  # noqa: E402
from engine.errors import BadAnswer  # noqa: E402
from engine.records import FunctionSpec, Message  # noqa: E402
from engine.teacher import Completion  # noqa: E402
from engine.teachers.vllm_inproc import VLLMInprocTeacher  # noqa: E402

PLACE_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                "required": ["city", "country"], "additionalProperties": False}
WEATHER = FunctionSpec(name="get_weather", description="Get the current weather for a city",
                       parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                                   "additionalProperties": False})


def emit(kind: str, completion: Completion) -> None:
    calls = [{"name": c.name, "arguments": c.arguments} for c in completion.message.tool_calls]
    print(json.dumps({"kind": kind, "content": completion.message.content, "tool_calls": calls, "model": completion.model,
                      "finish_reason": completion.finish_reason,
                      "usage": [completion.usage.prompt_tokens, completion.usage.completion_tokens]}), flush=True)


async def main() -> None:
    teacher = VLLMInprocTeacher("smollm2")
    fmt = {"type": "json_schema", "json_schema": {"name": "place", "schema": PLACE_SCHEMA}}
    try:
        # Two first calls at once: one engine start serves both.
        chat, structured = await asyncio.gather(
            teacher.chat([Message(role="user", content="What is the capital of France? Answer in one short sentence.")], max_tokens=48),
            teacher.chat([Message(role="user", content="Name the capital of France and its country as JSON.")],
                         response_format=fmt, max_tokens=64))
        emit("chat", chat)
        emit("json_schema", structured)
        emit("forced_tool", await teacher.chat([Message(role="user", content="What's the weather like in Paris today?")], [WEATHER],
                                               tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=48))
        try:
            await teacher.chat([Message(role="user", content="Write a long poem about the sea.")], max_tokens=4)
        except BadAnswer as err:
            usage = [err.usage.prompt_tokens, err.usage.completion_tokens] if err.usage else None
            print(json.dumps({"kind": "truncated", "error": str(err), "usage": usage}), flush=True)
        m = metrics.METRICS
        print(json.dumps({"kind": "metrics", "requests": m.requests, "prompt_tokens": m.prompt_tokens,
                          "completion_tokens": m.completion_tokens}), flush=True)
    finally:
        await teacher.aclose()
    # aclose stopped the engine core: no child process of ours is left
    print(json.dumps({"kind": "closed", "engine": teacher.engine is None,
                      "children": [c.name for c in multiprocessing.active_children()]}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
