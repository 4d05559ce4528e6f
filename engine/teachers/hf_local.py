"""A teacher running a transformers causal LM in-process, batching concurrent requests.

``chat`` renders the conversation with the model's chat template (tools included) on the
event loop and queues it; one worker thread collects up to ``batch_size`` queued requests
(waiting at most ``batch_wait_ms`` for more after the first), runs one left-padded
``generate`` for all of them and hands each caller its own answer. The event loop never
blocks on torch, and concurrent conversations share forward passes instead of queueing
one by one.

Tool calls are read from hermes-style ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``
blocks with ``json.loads`` (never evaluated). Without constrained decoding, ``tool_choice``
is honoured by starting the assistant turn for the model: ``required`` opens a
``<tool_call>`` block, a named function also writes its name; a JSON ``response_format``
opens the reply with ``{``. Token usage is counted exactly from the token ids.
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import metrics, wire
from engine.errors import BadAnswer, FatalTeacherError, UserInputError
from engine.records import FunctionSpec, Message, ToolCall
from engine.teacher import Completion, Usage

_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|\Z)", re.S)
_OPTIONS = {"batch_size", "batch_wait_ms", "dtype", "device", "max_concurrency", "price_in", "price_out"}


def parse_hermes(text: str) -> tuple[str | None, list[ToolCall]]:
    """Split generated text into (content outside tool-call blocks, tool calls).

    A block that is not a JSON object with a string ``name`` and object ``arguments`` is a
    ``BadAnswer`` quoting it. An unterminated last block (the model stopped at EOS right
    after the JSON) is accepted when its JSON is complete."""
    calls = []
    for i, match in enumerate(_TOOL_CALL.finditer(text)):
        body = match.group(1)
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            raise BadAnswer(f"tool call {i} is not valid JSON: {wire.quote(body)}", text=text) from None
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
            raise BadAnswer(f"tool call {i} has no function name: {wire.quote(body)}", text=text)
        try:
            args = wire.parse_arguments(data.get("arguments", data.get("parameters", {})), data["name"])
        except BadAnswer as err:
            raise BadAnswer(f"tool call {i}: {err}", text=text) from None
        calls.append(ToolCall(name=data["name"], arguments=args, id=f"call_{i}"))
    content = _TOOL_CALL.sub("", text).strip() if calls else text.strip()
    return (content or None) if calls else content, calls


@dataclass
class _Request:
    ids: list[int]
    prefix: str  # text we started the assistant turn with (part of the answer)
    temperature: float
    max_tokens: int
    seed: int | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    key: tuple = field(init=False)

    def __post_init__(self) -> None:
        # Greedy and sampled requests cannot share one generate() call.
        self.key = ("greedy",) if self.temperature <= 0 else ("sample", self.temperature)


class HFTeacher:
    """``Teacher`` over a local transformers checkpoint (``smollm2`` = the embedded default).

    Options: batch_size (default 8, or max_concurrency when given), batch_wait_ms (5),
    dtype (float32), device (cpu), price_in / price_out (USD per 1M tokens)."""

    def __init__(self, model_dir: str | Path = "smollm2", **config: Any):
        unknown = set(config) - _OPTIONS
        if unknown:
            raise UserInputError(f"hf teacher option(s) {', '.join(sorted(unknown))} unknown; use: {', '.join(sorted(_OPTIONS))}")
        self.name = f"hf:{model_dir or 'smollm2'}"
        if str(model_dir) in ("", "smollm2"):
            from engine.models import smollm2_checkpoint

            model_dir = smollm2_checkpoint()
        self.model_dir = Path(model_dir).expanduser()
        if not (self.model_dir / "config.json").is_file():
            raise UserInputError(f"hf teacher directory {self.model_dir} has no config.json; point hf: at a Hugging Face checkpoint folder")
        self.batch_size = int(config.get("batch_size") or config.get("max_concurrency") or 8)
        self.batch_wait_s = float(config.get("batch_wait_ms", 5.0)) / 1000
        self.dtype, self.device = config.get("dtype", "float32"), config.get("device", "cpu")
        self.price_in, self.price_out = float(config.get("price_in", 0.0)), float(config.get("price_out", 0.0))
        self.batches: list[int] = []  # size of every generate() call, for tests and tuning
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self.tokenizer: Any = None
        self.model: Any = None

    def _load_tokenizer(self) -> Any:
        with self._lock:
            if self.tokenizer is None:
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(self.model_dir)
                tok.padding_side = "left"
                if tok.pad_token is None:
                    tok.pad_token = tok.eos_token
                if not tok.chat_template:
                    raise UserInputError(f"{self.model_dir} has no chat template; add chat_template.jinja to the folder")
                self.tokenizer = tok
        return self.tokenizer

    async def chat(self, messages: list[Message], tools: list[FunctionSpec] | None = None, *,
                   tool_choice: str | dict[str, Any] | None = None, response_format: dict[str, Any] | None = None,
                   temperature: float = 0.0, max_tokens: int = 512, seed: int | None = None) -> Completion:
        loop = asyncio.get_running_loop()
        tok = self.tokenizer or await asyncio.to_thread(self._load_tokenizer)
        prompt, prefix = render(tok, messages, tools, tool_choice, response_format)
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        request = _Request(ids, prefix, temperature, max_tokens, seed, loop, loop.create_future())
        self._ensure_worker()
        self._queue.put(request)
        text, n_out, stopped = await request.future
        metrics.METRICS.record_usage(len(ids), n_out, price_in=self.price_in, price_out=self.price_out)
        return completion(prefix + text, stopped=stopped, prompt_tokens=len(ids), completion_tokens=n_out,
                          max_tokens=max_tokens, model=self.model_dir.name)

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._serve, name=f"hf-teacher-{self.model_dir.name}", daemon=True)
                self._worker.start()

    # -- worker thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            self._load_model()
        except Exception as exc:  # every waiting caller gets the reason
            err = FatalTeacherError(f"cannot load {self.model_dir} with transformers: {type(exc).__name__}: {exc}")
            self._fail_all(err)
            return
        held: list[_Request] = []  # taken from the queue but not batchable with the last batch
        while True:
            batch, held, stop = self._collect(held)
            if batch:
                try:
                    self._generate(batch)
                except Exception as exc:  # noqa: BLE001 - report to the callers, keep serving
                    for r in batch:
                        _resolve(r, exc=FatalTeacherError(f"generation failed: {type(exc).__name__}: {exc}"))
            if stop:
                for r in held:
                    _resolve(r, exc=FatalTeacherError("the hf teacher was closed"))
                return

    def _collect(self, held: list[_Request]) -> tuple[list[_Request], list[_Request], bool]:
        """One batch of same-sampling requests: the first waits, the rest within batch_wait_s."""
        pending = [r for r in held if not r.future.cancelled()]
        stop = False
        if not pending:
            first = self._queue.get()
            if first is None:
                return [], [], True
            pending.append(first)
        deadline = None
        while len(pending) < self.batch_size * 2:
            try:
                if deadline is None:
                    deadline = time.monotonic() + self.batch_wait_s
                remaining = deadline - time.monotonic()
                item = self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            pending.append(item)
        key = pending[0].key
        batch = [r for r in pending if r.key == key and not r.future.cancelled()][: self.batch_size]
        rest = [r for r in pending if r not in batch and not r.future.cancelled()]
        return batch, rest, stop

    def _load_model(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self._load_tokenizer()
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=getattr(torch, self.dtype))
        self.model = model.to(self.device).eval()
        eos = {self.tokenizer.eos_token_id}
        gen_eos = self.model.generation_config.eos_token_id
        eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        self._eos = sorted(e for e in eos if e is not None)

    def _generate(self, batch: list[_Request]) -> None:
        import torch

        tok = self.tokenizer
        padded = tok.pad({"input_ids": [r.ids for r in batch]}, return_tensors="pt", padding=True).to(self.device)
        first = batch[0]
        sampling: dict[str, Any] = {"do_sample": False} if first.temperature <= 0 else {"do_sample": True, "temperature": first.temperature}
        if first.temperature > 0 and first.seed is not None:
            torch.manual_seed(first.seed)
        longest = max(r.max_tokens for r in batch)
        with torch.inference_mode():
            out = self.model.generate(**padded, max_new_tokens=longest, eos_token_id=self._eos, pad_token_id=tok.pad_token_id,
                                      top_p=None, top_k=None, **sampling)
        self.batches.append(len(batch))
        new = out[:, padded["input_ids"].shape[1]:].tolist()
        for r, ids in zip(batch, new):
            cut = next((i for i, t in enumerate(ids) if t in self._eos), None)
            stopped = cut is not None and cut < r.max_tokens
            kept = ids[:cut] if stopped else ids[: r.max_tokens]
            n_out = len(kept) + (1 if stopped else 0)  # the stop token was generated too
            _resolve(r, result=(tok.decode(kept, skip_special_tokens=False), n_out, stopped))

    def _fail_all(self, err: Exception) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                _resolve(item, exc=err)

    async def aclose(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None and worker.is_alive():
            self._queue.put(None)
            await asyncio.to_thread(worker.join)
        self.model = None


def render(tokenizer: Any, messages: list[Message], tools: list[FunctionSpec] | None, tool_choice: str | dict[str, Any] | None,
           response_format: dict[str, Any] | None) -> tuple[str, str]:
    """(prompt text ending with the assistant turn's forced start, that forced start)."""
    offered = tools if tools and tool_choice != "none" else None
    prompt = tokenizer.apply_chat_template(wire.messages_to_wire(messages), tools=wire.tools_to_wire(offered) if offered else None,
                                           add_generation_prompt=True, tokenize=False)
    name = forced_function(offered, tool_choice)
    prefix = _prefill({"type": "function", "function": {"name": name}} if name else tool_choice if offered else None, response_format)
    return prompt + prefix, prefix


def forced_function(tools: list[FunctionSpec] | None, tool_choice: str | dict[str, Any] | None) -> str | None:
    """The function a ``tool_choice`` forces: the named one, or the only tool under ``required``."""
    if not tools or tool_choice in (None, "none", "auto"):
        return None
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise UserInputError(f"tool_choice {tool_choice!r} names no function; use {{'type': 'function', 'function': {{'name': ...}}}}")
        return name
    return tools[0].name if tool_choice == "required" and len(tools) == 1 else None


def completion(text: str, *, stopped: bool, prompt_tokens: int, completion_tokens: int, max_tokens: int, model: str) -> Completion:
    """The answer ``text`` (forced start included) as a Completion; a truncated one is a BadAnswer."""
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    if not stopped:
        raise BadAnswer(f"truncated: the answer hit max_tokens={max_tokens}: {wire.quote(text)}", text=text, usage=usage)
    try:
        content, calls = parse_hermes(text)
    except BadAnswer as err:
        err.usage = usage
        raise
    return Completion(message=Message(role="assistant", content=content, tool_calls=calls),
                      finish_reason="tool_calls" if calls else "stop", usage=usage, model=model)


def _prefill(tool_choice: str | dict[str, Any] | None, response_format: dict[str, Any] | None) -> str:
    if isinstance(tool_choice, dict):
        return '<tool_call>\n{"name": ' + json.dumps(tool_choice["function"]["name"]) + ', "arguments": '
    if tool_choice == "required":
        return '<tool_call>\n{"name": "'
    if response_format and response_format.get("type") in ("json_object", "json_schema"):
        return "{"
    return ""


def _resolve(request: _Request, *, result: Any = None, exc: BaseException | None = None) -> None:
    def settle() -> None:
        if request.future.done():
            return
        if exc is not None:
            request.future.set_exception(exc)
        else:
            request.future.set_result(result)

    request.loop.call_soon_threadsafe(settle)
