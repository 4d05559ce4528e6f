"""`magnet serve-sim`: the simulator teacher as a loopback OpenAI-compatible server, with faults.

Routes: those of ``engine.chat_server`` (chat completions, models, health), answered by
``SimTeacher``, plus GET /stats (counts per outcome, the arrival time of every request and of every 429, so
tests can check client timing). The faults are middleware around the chat route.

Faults are drawn per request from one seeded RNG, so a run with the same flags and request
order sees the same faults. ``script`` forces the outcome of the first requests in order
(e.g. ``["5xx", "ok"]``), for tests that need an exact sequence. Outcomes:
``ok``, ``429``, ``5xx``, ``timeout`` (hang until the client gives up), ``html`` (an HTML
error page), ``badjson`` (a cut JSON body), ``nofields`` (JSON without ``choices``),
``length`` (finish_reason=length), ``cut`` (the connection drops mid-body), ``filter``
(finish_reason=content_filter), ``badargs`` (tool call arguments that are not JSON), ``401``
(an auth error that echoes the bearer token back, as a careless proxy might: clients must not
repeat it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

import msgspec
import orjson
from aiohttp import web

from engine.chat_server import CHAT_PATH, JSON, BadRequest, chat_app, chat_request, error_response, teacher_answer
from engine.config_cli import ConfigCLI, doc
from engine.errors import UserInputError
from engine.loopback import new_loop, serve_in_thread, serving
from engine.teachers.sim import SimTeacher

OUTCOMES = ("ok", "429", "5xx", "timeout", "html", "badjson", "nofields", "length", "cut", "filter", "badargs", "401")
_HTML_PAGE = (b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>"
              b"<hr><center>nginx</center></body></html>")


class Faults(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What the server does wrong, and how often (rates are per-request probabilities)."""

    latency_ms: Annotated[float, doc("mean added latency per answer", ge=0)] = 0.0
    latency_dist: Annotated[Literal["fixed", "exp", "lognormal"], doc("latency distribution around the mean")] = "fixed"
    rpm: Annotated[Annotated[int, msgspec.Meta(ge=1)] | None, doc("answer 429 above this many requests per rolling minute")] = None
    error_rate: Annotated[float, doc("fraction answered 500/502/503", ge=0, le=1)] = 0.0
    timeout_rate: Annotated[float, doc("fraction that hang until the client gives up", ge=0, le=1)] = 0.0
    malformed_rate: Annotated[float, doc("fraction answered with an HTML page, cut JSON or JSON without choices", ge=0, le=1)] = 0.0
    truncate_rate: Annotated[float, doc("fraction answered finish_reason=length or with the body cut off", ge=0, le=1)] = 0.0
    seed: Annotated[int, doc("seed of the fault draws and of the simulator's answers")] = 0
    script: Annotated[list[str], doc("forced outcomes of the first requests, in order: " + ", ".join(OUTCOMES))] = []
    retry_after_s: Annotated[float, doc("Retry-After of a 429 forced by the script", gt=0)] = 1.0
    model: Annotated[str, doc("model name reported by /v1/models and in answers")] = "sim"
    window_s: Annotated[float, doc("length of the rolling rate-limit window (60 = per minute)", gt=0)] = 60.0
    rate_headers: Annotated[Literal["full", "retry-after"], doc("what tells clients the rate limit: x-ratelimit-* headers and "
                                                                "retry-after-ms (full), or only a 429's Retry-After in whole seconds, "
                                                                "as many proxies and providers send")] = "full"


# `magnet serve-sim` flags: one per Faults field.
FAULTS_CLI = ConfigCLI(Faults, section="faults")


class _State:
    def __init__(self, faults: Faults):
        self.faults = faults
        self.teacher = SimTeacher(seed=faults.seed, model=faults.model)
        self.rng = random.Random(faults.seed)
        self.latency_rng = random.Random(faults.seed + 1)
        self.script = deque(faults.script)
        self.window: deque[float] = deque()  # arrival times of requests admitted by the rate limit
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.arrivals: deque[float] = deque(maxlen=100_000)  # time.monotonic() of recent chat requests
        self.refused: deque[float] = deque(maxlen=100_000)  # ... and of those answered 429
        self.closing = asyncio.Event()
        self.serial = 0

    def outcome(self, now: float) -> tuple[str, float]:
        """The fault for this request, and (for 429) the seconds until a slot frees."""
        f = self.faults
        if f.rpm is not None:
            while self.window and self.window[0] <= now - f.window_s:
                self.window.popleft()
            if len(self.window) >= f.rpm:
                return "429", self.window[0] + f.window_s - now
        forced = self.script.popleft() if self.script else None
        if forced == "429":
            return forced, f.retry_after_s
        if f.rpm is not None:
            self.window.append(now)
        if forced is not None:
            return forced, 0.0
        r = self.rng.random()
        for kind, rate in (("5xx", f.error_rate), ("timeout", f.timeout_rate), ("malformed", f.malformed_rate), ("truncate", f.truncate_rate)):
            if r < rate:
                pick = self.rng.random()
                if kind == "malformed":
                    return ("html", "badjson", "nofields")[int(pick * 3)], 0.0
                if kind == "truncate":
                    return ("length" if pick < 0.5 else "cut"), 0.0
                return kind, 0.0
            r -= rate
        return "ok", 0.0

    def latency(self) -> float:
        mean = self.faults.latency_ms / 1000.0
        if mean <= 0:
            return 0.0
        dist = self.faults.latency_dist
        if dist == "exp":
            return self.latency_rng.expovariate(1.0 / mean)
        if dist == "lognormal":
            sigma = 0.5
            return self.latency_rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)
        return mean

    def limit_headers(self, now: float) -> dict[str, str]:
        f = self.faults
        if f.rpm is None or f.rate_headers == "retry-after":
            return {}
        remaining = max(f.rpm - len(self.window), 0)
        reset = (self.window[0] + f.window_s - now) if self.window else 0.0
        return {
            "x-ratelimit-limit-requests": str(round(f.rpm * 60.0 / f.window_s)),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": f"{max(reset, 0.0) * 1000:.0f}ms",
        }


_STATE = web.AppKey("state", _State)
# Outcomes that change an answer the simulator did give (the rest replace it before it is asked).
_SPOILED = ("nofields", "length", "filter", "badargs", "badjson", "cut")


@web.middleware
async def _inject_faults(request: web.Request, handler: Any) -> web.StreamResponse:
    """The fault drawn for a chat request, around the simulator's answer."""
    if request.path != CHAT_PATH:
        return await handler(request)
    state = request.app[_STATE]
    now = time.monotonic()
    state.arrivals.append(now)
    kind, wait = state.outcome(now)
    state.counts[kind] += 1
    if kind == "401":
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return error_response(401, "invalid_api_key", f"Incorrect API key provided: {token}.")
    if kind == "429":
        state.refused.append(now)
        headers = state.limit_headers(now) | {"retry-after": str(max(1, math.ceil(wait)))}
        if state.faults.rate_headers == "full":
            headers["retry-after-ms"] = str(max(1, round(wait * 1000)))
        return error_response(429, "rate_limit_exceeded", "Rate limit reached for requests; please retry after the given time.", headers)
    headers = state.limit_headers(now)
    try:
        await chat_request(request)  # a bad body is answered 400 at once, whatever the fault
    except BadRequest as err:
        return error_response(400, "invalid_request_error", str(err), headers)
    delay = state.latency()
    if kind == "timeout":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.closing.wait(), timeout=3600)
        return error_response(504, "timeout", "simulated hang ended by shutdown", headers)
    if delay:
        await asyncio.sleep(delay)
    if kind == "5xx":
        return error_response((500, 502, 503)[state.counts["5xx"] % 3], "server_error",
                              "The server had an error while processing your request.", headers)
    if kind == "html":
        return web.Response(body=_HTML_PAGE, status=200, content_type="text/html", headers=headers)
    answer = await handler(request)
    answer.headers.update(headers)
    if kind not in _SPOILED:
        return answer
    body = orjson.loads(answer.body)
    choice = body["choices"][0]
    if kind == "nofields":
        body.pop("choices")
    elif kind == "length":
        choice["finish_reason"] = "length"
    elif kind == "filter":
        choice["finish_reason"], choice["message"]["content"] = "content_filter", ""
    elif kind == "badargs":
        choice["message"]["tool_calls"] = [{"id": "call_bad", "type": "function",
                                            "function": {"name": "broken", "arguments": '{"city": "Paris", "days": 3'}}]
        choice["finish_reason"] = "tool_calls"
    raw = orjson.dumps(body)
    if kind == "badjson":
        return web.Response(body=raw[: len(raw) // 2], content_type=JSON, headers=headers)
    if kind == "cut":
        resp = web.StreamResponse(headers=headers)
        resp.content_type, resp.content_length = JSON, len(raw)
        await resp.prepare(request)
        await resp.write(raw[: len(raw) // 2])
        request.transport.close()  # the client sees the connection drop before Content-Length bytes
        return resp
    return web.Response(body=raw, content_type=JSON, headers=headers)


async def _stats(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    body = {"counts": state.counts, "arrivals": list(state.arrivals), "refused": list(state.refused)}
    return web.Response(body=orjson.dumps(body), content_type=JSON)


def build_app(faults: Faults) -> web.Application:
    state = _State(faults)
    app = chat_app(teacher_answer(state.teacher), model=faults.model, middlewares=[_inject_faults])
    app[_STATE] = state
    app.router.add_get("/stats", _stats)

    async def release_hangs(app: web.Application) -> None:
        state.closing.set()  # "timeout" handlers end now, so shutdown is quick

    app.on_shutdown.append(release_hangs)
    return app


@contextlib.asynccontextmanager
async def _serving(faults: Faults, host: str, port: int) -> AsyncIterator[str]:
    async with serving(build_app(faults), host=host, port=port) as root:
        yield root + "/v1"


def _faults(overrides: dict[str, Any]) -> Faults:
    try:
        faults = msgspec.convert(overrides, Faults)
    except msgspec.ValidationError as err:
        raise UserInputError(f"sim server faults are invalid: {err}; valid keys are {', '.join(Faults.__struct_fields__)}") from None
    for kind in faults.script:
        if kind not in OUTCOMES:
            raise UserInputError(f"fault script entry {kind!r} is unknown; use one of {', '.join(OUTCOMES)}")
    return faults


@contextlib.contextmanager
def serve_sim_thread(*, host: str = "127.0.0.1", port: int = 0, **faults: Any) -> Iterator[str]:
    """Serve in a background thread with its own event loop; yields the base URL (``.../v1``).
    The server then never competes with the caller's loop (tests, benchmarks, sync code)."""
    config = _faults(faults)
    with serve_in_thread(lambda: build_app(config), host=host, port=port, name="magnet-sim-server") as root:
        yield root + "/v1"


@contextlib.asynccontextmanager
async def serve_sim(*, same_loop: bool = False, host: str = "127.0.0.1", port: int = 0, **faults: Any) -> AsyncIterator[str]:
    """``async with serve_sim(rpm=60, error_rate=0.1) as base_url:`` -- a loopback OpenAI-compatible
    simulator. By default it runs in its own thread; ``same_loop=True`` serves on the caller's loop."""
    if same_loop:
        async with _serving(_faults(faults), host, port) as url:
            yield url
        return
    cm = serve_sim_thread(host=host, port=port, **faults)
    url = await asyncio.to_thread(cm.__enter__)
    try:
        yield url
    finally:
        await asyncio.to_thread(cm.__exit__, None, None, None)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="magnet serve-sim", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 = pick a free port and print it")
    FAULTS_CLI.add_arguments(parser, "faults")
    args = parser.parse_args(argv)
    host, port = args.host, args.port
    config = _faults(FAULTS_CLI.values(args))

    async def run() -> None:
        async with _serving(config, host, port) as url:
            print(f"magnet serve-sim: serving {config.model!r} at {url} (faults: {msgspec.json.encode(config).decode()})", flush=True)
            await asyncio.Event().wait()

    loop = new_loop()
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
    return 0
