"""Optional: vLLM's engine in this process (``AsyncLLM``), no HTTP in between.

Useful when one script owns the model (offline evaluation, self-improvement rounds) and the
HTTP hop would only add overhead. vLLM starts an engine-core process, so a script using this
teacher must guard its entry point with ``if __name__ == "__main__":``. Prompts are rendered
and tool calls parsed exactly as in the transformers teacher (``hf_local.render`` /
``hf_local.completion``); JSON ``response_format`` schemas and forced functions are enforced
with vLLM structured outputs (``StructuredOutputsParams``). The managed server
(``vllm_server``) stays the default vLLM backend.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
from pathlib import Path
from typing import Any

from engine import metrics
from engine.errors import UserInputError
from engine.records import FunctionSpec, Message
from engine.teacher import Completion
from engine.teachers.hf_local import completion, forced_function, render
from engine.teachers.vllm_cpu import cpu_thread_env, vllm_dtype
from engine.teachers.vllm_server import detect_device, resolve_model

_ids = itertools.count()


class VLLMInprocTeacher:
    """``Teacher`` on ``vllm.v1.engine.async_llm.AsyncLLM``; ``model`` as for ``VLLMServerTeacher``."""

    def __init__(self, model: str = "smollm2", *, max_model_len: int = 2048, dtype: str = "auto", device: str = "auto",
                 kvcache_gib: float = 1.0, price_in: float = 0.0, price_out: float = 0.0, **unknown: Any):
        if unknown:  # a teacher spec's options (`vllm-inproc:MODEL`) are the user's to fix
            raise UserInputError(f"vllm-inproc teacher option(s) {', '.join(sorted(unknown))} unknown; "
                                 "use: device, dtype, kvcache_gib, max_model_len, price_in, price_out")
        self.name = f"vllm-inproc:{model or 'smollm2'}"
        self._model, self.max_model_len, self.kvcache_gib = model, max_model_len, kvcache_gib
        self.device = detect_device() if device == "auto" else device
        self.dtype = vllm_dtype(dtype, self.device)
        self.price_in, self.price_out = price_in, price_out
        self.engine: Any = None
        self.tokenizer: Any = None
        self._start_lock = asyncio.Lock()  # concurrent first calls must not start two engines
        self._procs: list[multiprocessing.process.BaseProcess] = []  # the engine-core processes vLLM spawned for us

    async def start(self) -> None:
        """Load the tokenizer and start the engine (else done by the first ``chat``)."""
        async with self._start_lock:
            if self.engine is None:
                self._start()

    def _start(self) -> None:
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        model, _, template = resolve_model(self._model)
        if self.device == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.kvcache_gib:g}")
            cpu_thread_env(os.environ)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if template:
            self.tokenizer.chat_template = Path(template).read_text(encoding="utf-8")
        args = AsyncEngineArgs(model=model, dtype=self.dtype, max_model_len=self.max_model_len,
                               enforce_eager=self.device == "cpu", disable_log_stats=True)
        before = set(multiprocessing.active_children())
        self.engine = AsyncLLM.from_engine_args(args)
        self._procs = [p for p in multiprocessing.active_children() if p not in before]

    async def chat(self, messages: list[Message], tools: list[FunctionSpec] | None = None, *,
                   tool_choice: str | dict[str, Any] | None = None, response_format: dict[str, Any] | None = None,
                   temperature: float = 0.0, max_tokens: int = 512, seed: int | None = None) -> Completion:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if self.engine is None:
            await self.start()
        name = forced_function(tools if tool_choice != "none" else None, tool_choice)
        schema = _json_schema(response_format)
        structured = None
        suffix = ""
        if name is not None:  # the forced start ends at "arguments": — decode them under the schema
            spec = next((t for t in tools or [] if t.name == name), None)
            structured = StructuredOutputsParams(json=spec.parameters if spec else {"type": "object"})
            suffix = "}\n</tool_call>"
        elif schema is not None:
            structured = StructuredOutputsParams(json=schema)
            response_format = None  # no "{" prefill: the grammar writes the whole object
        elif response_format and response_format.get("type") == "json_object":
            structured = StructuredOutputsParams(json_object=True)
            response_format = None
        prompt, prefix = render(self.tokenizer, messages, tools, tool_choice, response_format)
        params = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed, structured_outputs=structured)
        final = None
        async for final in self.engine.generate(prompt, params, request_id=f"magnet-{next(_ids)}"):  # noqa: B007 - drained: `final` is the last
            pass
        out = final.outputs[0]
        n_in, n_out = len(final.prompt_token_ids or []), len(out.token_ids)
        metrics.METRICS.record_usage(n_in, n_out, price_in=self.price_in, price_out=self.price_out)
        return completion(prefix + out.text + suffix, stopped=out.finish_reason == "stop", prompt_tokens=n_in,
                          completion_tokens=n_out, max_tokens=max_tokens, model=Path(self._model or "smollm2").name)

    async def aclose(self, timeout_s: float = 30.0) -> None:
        """Stop the engine and wait until its processes are gone (vLLM's shutdown only signals a
        slow one and returns), so a caller that closed the teacher has nothing left running."""
        if self.engine is None:
            return
        engine, self.engine = self.engine, None
        await asyncio.to_thread(engine.shutdown)
        for proc in self._procs:
            await asyncio.to_thread(proc.join, timeout_s)
        self._procs = []


def _json_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    if not response_format or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    return spec.get("schema") or None
