"""The one protocol every teacher backend implements.

``distill`` and ``bench`` are written against ``Teacher`` only, so the same logic runs on a
remote API, a managed vLLM server, in-process transformers or the simulator.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from engine.records import FunctionSpec, Message

FinishReason = Literal["stop", "tool_calls", "length", "content_filter", "error"]


class Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Completion(msgspec.Struct, kw_only=True):
    message: Message  # role == "assistant"; content and/or tool_calls
    finish_reason: str = "stop"
    usage: Usage = msgspec.field(default_factory=Usage)
    model: str = ""
    # The assistant message exactly as an OpenAI-compatible server sent it (HTTP teachers only):
    # a benchmark that must store what the model sent (e.g. tool-call arguments "") reads it here.
    wire_message: dict[str, Any] | None = None


@runtime_checkable
class Teacher(Protocol):
    """An async chat model. Implementations raise ``engine.errors.TeacherError`` subclasses."""

    name: str  # printable identity (spec without secrets), stored on trajectories

    async def chat(
        self,
        messages: list[Message],
        tools: list[FunctionSpec] | None = None,
        *,
        tool_choice: str | dict[str, Any] | None = None,
        response_format: dict[str, Any] | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
    ) -> Completion: ...

    async def aclose(self) -> None: ...
