"""A teacher behind any OpenAI-compatible /chat/completions endpoint, over aiohttp.

Works for OpenAI, Gemini's OpenAI endpoint, vLLM, SGLang, llama.cpp servers and the loopback
simulator. One ClientSession per event loop with a connection pool sized to the concurrency;
bodies are encoded and decoded with orjson. Every call goes through the rate limiter
(``engine.ratelimit``) and the retry policy (``engine.retry``), so a caller sees either a
usable ``Completion`` or one final error with ``.attempts`` set.

The API key is read from the environment variable the config names and is kept only in the
session's default headers: it is not part of ``name``, ``repr``, error messages or metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from engine import metrics, wire
from engine.errors import BadAnswer, FatalTeacherError, RateLimited, RetryableError, UserInputError
from engine.ratelimit import Limiter, retry_after_seconds
from engine.records import FunctionSpec, Message
from engine.retry import with_retries
from engine.teacher import Completion
from engine.teachers.spec import DEFAULT_OPENAI_URL

log = logging.getLogger(__name__)

_LOOPBACK = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
_FATAL_HINT = {
    400: "the request was rejected; check the model's options (tools, response_format, max_tokens)",
    401: "authentication failed; check the key in ${env}",
    403: "permission denied; check the key in ${env} and the model's access",
    404: "not found; check the model name and that the base URL ends in /v1",
}


class OpenAIHTTPTeacher:
    """``Teacher`` over HTTP. Keyword options match ``TeacherConfig`` (see engine.teachers.spec)."""

    def __init__(self, model: str, base_url: str = DEFAULT_OPENAI_URL, *, api_key_env: str = "OPENAI_API_KEY",
                 rpm: float | None = None, tpm: float | None = None, tpm_in: float | None = None, tpm_out: float | None = None,
                 max_concurrency: int = 64, price_in: float = 0.0, price_out: float = 0.0, timeout_s: float = 120.0,
                 max_retries: int = 6, max_bad_answer_retries: int = 2, backoff_s: float = 0.5, probe_limits: bool | None = None,
                 name: str | None = None, regex_outputs: bool = False, send_seed: bool = True):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.name = name or (f"openai:{model}" if self.base_url == DEFAULT_OPENAI_URL else f"openai:{model}@{self.base_url}")
        key = os.environ.get(api_key_env) or ""
        host = urlsplit(self.base_url).hostname or ""
        if not key and host not in _LOOPBACK:
            raise UserInputError(f"teacher {self.name!r} needs an API key: set the environment variable {api_key_env} "
                                 "(or name another one with api_key_env)")
        self._key = key
        self._api_key_env = api_key_env
        self.price_in, self.price_out = price_in, price_out
        self.timeout_s = timeout_s
        self.max_retries, self.max_bad_answer_retries, self.backoff_s = max_retries, max_bad_answer_retries, backoff_s
        self.max_concurrency = max_concurrency
        # The server is vLLM: a ``{"type": "regex"}`` response_format goes out as its structured_outputs extension.
        self.regex_outputs = regex_outputs
        self.send_seed = send_seed  # False: a request's seed is not sent (engine.teachers.vllm_server.VLLMServer.client says why)
        self.limiter = Limiter(rpm=rpm, tpm=tpm, tpm_in=tpm_in, tpm_out=tpm_out, max_concurrency=max_concurrency,
                               probe_first=probe_limits is not False)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"OpenAIHTTPTeacher(name={self.name!r}, max_concurrency={self.max_concurrency}, key_env={self._api_key_env!r})"

    def _open(self) -> aiohttp.ClientSession:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = "Bearer " + self._key
        connector = aiohttp.TCPConnector(limit=self.max_concurrency, limit_per_host=0, ttl_dns_cache=300)
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(headers=headers, connector=connector,
                                              timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session

    async def chat(self, messages: list[Message], tools: list[FunctionSpec] | None = None, *,
                   tool_choice: str | dict[str, Any] | None = None, response_format: dict[str, Any] | None = None,
                   temperature: float = 0.0, max_tokens: int = 512, seed: int | None = None) -> Completion:
        payload: dict[str, Any] = {"model": self.model, "messages": wire.messages_to_wire(messages),
                                   "temperature": temperature, "max_tokens": max_tokens}
        if tools:
            payload["tools"] = wire.tools_to_wire(tools)
        if tool_choice is not None:
            payload["tool_choice"] = tool_choice
        if response_format is not None and response_format.get("type") == "regex":
            if not self.regex_outputs:
                raise UserInputError(f"teacher {self.name!r} takes no regex response_format (only vLLM servers do)")
            payload["structured_outputs"] = {"regex": response_format["regex"]}
        elif response_format is not None:
            payload["response_format"] = response_format
        if seed is not None and self.send_seed:
            payload["seed"] = seed
        body = orjson.dumps(payload)
        est_in = len(body) // 4  # ~4 bytes per token: a reservation, trued up from the reply's usage
        return await with_retries(lambda: self._send(body, est_in, max_tokens), max_retries=self.max_retries,
                                  max_bad_answer_retries=self.max_bad_answer_retries, base_s=self.backoff_s,
                                  on_retry=self._log_retry)

    async def _send(self, body: bytes, est_in: int, est_out: int) -> Completion:
        session = self._session
        if session is None or self._loop is not asyncio.get_running_loop():
            session = self._open()
        limiter = self.limiter
        await limiter.acquire(est_in, est_out)
        used_in = used_out = None
        try:
            try:
                async with session.post(self.url, data=body) as resp:
                    raw = await resp.read()
                    status, headers = resp.status, resp.headers
            except asyncio.TimeoutError:
                raise RetryableError(f"no answer from {self.url} within {self.timeout_s:g} s (timeout)") from None
            except aiohttp.ClientConnectorError as err:
                raise RetryableError(f"cannot connect to {self.url}: {err.os_error or err}; is the server running?") from None
            except aiohttp.ClientPayloadError as err:
                raise RetryableError(f"the connection to {self.url} dropped mid-answer (truncated body): {err}") from None
            except aiohttp.ClientError as err:
                raise RetryableError(f"HTTP error talking to {self.url}: {type(err).__name__}: {err}") from None
            limiter.observe(headers)
            if status != 200:
                self._raise_for_status(status, headers, raw)
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                kind = headers.get("Content-Type", "?")
                raise RetryableError(f"{self.url} answered 200 with a body that is not JSON ({kind}): {wire.quote(raw)}", status=status) from None
            try:
                completion = wire.completion_from_wire(data, raw)
            except BadAnswer as err:  # a lost answer still spent tokens: count them (below) and keep them on err
                if err.usage is not None:
                    used_in, used_out = err.usage.prompt_tokens, err.usage.completion_tokens
                raise
            used_in, used_out = completion.usage.prompt_tokens, completion.usage.completion_tokens
            limiter.on_success()
            return completion
        finally:
            limiter.release(est_in, est_out, used_in, used_out)
            metrics.METRICS.record_usage(used_in or 0, used_out or 0, price_in=self.price_in, price_out=self.price_out)

    def _raise_for_status(self, status: int, headers: Any, raw: bytes) -> None:
        message = self._scrub(_error_message(raw))
        if status == 429:
            retry_after = retry_after_seconds(headers)
            metrics.METRICS.rate_limited += 1
            self.limiter.on_rate_limited(retry_after)
            raise RateLimited(f"{self.url} answered 429 (rate limited, retry after {retry_after}s): {message}", retry_after=retry_after, status=429)
        if status >= 500 or status in (408, 409):
            raise RetryableError(f"{self.url} answered {status}: {message}", status=status,
                                 retry_after=retry_after_seconds(headers) if "retry-after" in headers else None)
        hint = _FATAL_HINT.get(status, "the server refused the request").replace("${env}", self._api_key_env)
        raise FatalTeacherError(f"{self.url} answered {status} for model {self.model!r}: {message} -- {hint}", status=status)

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _log_retry(self, err: BaseException, attempt: int, delay: float) -> None:
        log.debug("teacher %s: attempt %d failed (%s: %s); retrying in %.2f s", self.name, attempt, type(err).__name__, self._scrub(str(err)), delay)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _error_message(raw: bytes) -> str:
    """The provider's error text (``{"error": {"message": ...}}``), else the body's first characters."""
    try:
        data = orjson.loads(raw)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
    except orjson.JSONDecodeError:
        pass
    return wire.quote(raw)
