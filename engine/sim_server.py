"""`magnet serve-sim`: the simulator teacher as a loopback OpenAI-compatible server, with faults.

Routes: POST /v1/chat/completions (non-streaming), GET /v1/models, GET /health, and GET /stats
(counts per outcome and the arrival time of every request, so tests can check client timing).

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
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

import msgspec
import orjson
from aiohttp import web

from engine import wire
from engine.errors import BadAnswer, UserInputError
from engine.teachers.sim import SimTeacher
from engine.teachers.spec import field_help

OUTCOMES = ("ok", "429", "5xx", "timeout", "html", "badjson", "nofields", "length", "cut", "filter", "badargs", "401")
_JSON = "application/json"
_HTML_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"


def _p(text: str, **bounds: Any) -> msgspec.Meta:
    return msgspec.Meta(description=text, **bounds)


class Faults(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What the server does wrong, and how often (rates are per-request probabilities)."""

    latency_ms: Annotated[float, _p("mean added latency per answer", ge=0)] = 0.0
    latency_dist: Annotated[Literal["fixed", "exp", "lognormal"], _p("latency distribution around the mean")] = "fixed"
    rpm: Annotated[Annotated[int, msgspec.Meta(ge=1)] | None, _p("answer 429 above this many requests per rolling minute")] = None
    error_rate: Annotated[float, _p("fraction answered 500/502/503", ge=0, le=1)] = 0.0
    timeout_rate: Annotated[float, _p("fraction that hang until the client gives up", ge=0, le=1)] = 0.0
    malformed_rate: Annotated[float, _p("fraction answered with an HTML page, cut JSON or JSON without choices", ge=0, le=1)] = 0.0
    truncate_rate: Annotated[float, _p("fraction answered finish_reason=length or with the body cut off", ge=0, le=1)] = 0.0
    seed: Annotated[int, _p("seed of the fault draws and of the simulator's answers")] = 0
    script: Annotated[list[str], _p("forced outcomes of the first requests, in order: " + ", ".join(OUTCOMES))] = []
    retry_after_s: Annotated[float, _p("Retry-After of a 429 forced by the script", gt=0)] = 1.0
    model: Annotated[str, _p("model name reported by /v1/models and in answers")] = "sim"
    window_s: Annotated[float, _p("length of the rolling rate-limit window (60 = per minute)", gt=0)] = 60.0
    rate_headers: Annotated[Literal["full", "retry-after"], _p("what tells clients the rate limit: x-ratelimit-* headers and "
                                                               "retry-after-ms (full), or only a 429's Retry-After in whole seconds, "
                                                               "as many proxies and providers send")] = "full"


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


async def _chat(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    now = time.monotonic()
    state.arrivals.append(now)
    kind, wait = state.outcome(now)
    state.counts[kind] += 1
    if kind == "401":
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return _error(401, "invalid_api_key", f"Incorrect API key provided: {token}.", headers={})
    if kind == "429":
        headers = state.limit_headers(now) | {"retry-after": str(max(1, math.ceil(wait)))}
        if state.faults.rate_headers == "full":
            headers["retry-after-ms"] = str(max(1, round(wait * 1000)))
        return _error(429, "rate_limit_exceeded", "Rate limit reached for requests; please retry after the given time.", headers)
    headers = state.limit_headers(now)
    try:
        req = orjson.loads(await request.read())
        messages = [wire.message_from_wire(m) for m in req["messages"]]
        tools = wire.tools_from_wire(req.get("tools"))
    except (orjson.JSONDecodeError, KeyError, TypeError, BadAnswer) as err:
        return _error(400, "invalid_request_error", f"bad request body: {err}", headers)
    delay = state.latency()
    if kind == "timeout":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.closing.wait(), timeout=3600)
        return _error(504, "timeout", "simulated hang ended by shutdown", headers)
    if delay:
        await asyncio.sleep(delay)
    if kind == "5xx":
        return _error((500, 502, 503)[state.counts["5xx"] % 3], "server_error", "The server had an error while processing your request.", headers)
    if kind == "html":
        return web.Response(body=_HTML_PAGE, status=200, content_type="text/html", headers=headers)
    completion = state.teacher.answer(messages, tools, tool_choice=req.get("tool_choice"),
                                      response_format=req.get("response_format"), seed=req.get("seed"))
    state.serial += 1
    body = wire.completion_to_wire(completion, response_id=f"chatcmpl-sim{state.serial}", created=int(time.time()))
    choice = body["choices"][0]
    if kind == "nofields":
        body.pop("choices")
    elif kind == "length":
        choice["finish_reason"] = "length"
    elif kind == "filter":
        choice["finish_reason"], choice["message"]["content"] = "content_filter", ""
    elif kind == "badargs":
        choice["message"]["tool_calls"] = [{"id": "call_bad", "type": "function", "function": {"name": "broken", "arguments": '{"city": "Paris", "days": 3'}}]
        choice["finish_reason"] = "tool_calls"
    raw = orjson.dumps(body)
    if kind == "badjson":
        return web.Response(body=raw[: len(raw) // 2], content_type=_JSON, headers=headers)
    if kind == "cut":
        resp = web.StreamResponse(headers=headers)
        resp.content_type, resp.content_length = _JSON, len(raw)
        await resp.prepare(request)
        await resp.write(raw[: len(raw) // 2])
        request.transport.close()  # the client sees the connection drop before Content-Length bytes
        return resp
    return web.Response(body=raw, content_type=_JSON, headers=headers)


def _error(status: int, code: str, message: str, headers: dict[str, str]) -> web.Response:
    body = orjson.dumps({"error": {"message": message, "type": code, "code": code}})
    return web.Response(body=body, status=status, content_type=_JSON, headers=headers)


async def _models(request: web.Request) -> web.Response:
    model = request.app[_STATE].faults.model
    return web.json_response({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "magnet-sim"}]})


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _stats(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    return web.Response(body=orjson.dumps({"counts": state.counts, "arrivals": list(state.arrivals)}), content_type=_JSON)


def build_app(faults: Faults) -> web.Application:
    app = web.Application(client_max_size=64 << 20)
    app[_STATE] = _State(faults)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/stats", _stats)
    return app


@contextlib.asynccontextmanager
async def _serving(faults: Faults, host: str, port: int) -> AsyncIterator[str]:
    app = build_app(faults)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)  # hundreds of clients may connect at once
    await site.start()
    bound = runner.addresses[0][1]
    try:
        yield f"http://{host}:{bound}/v1"
    finally:
        app[_STATE].closing.set()  # release hanging "timeout" handlers so shutdown is quick
        await runner.cleanup()


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
    loop = _new_loop()
    ready: asyncio.Future[str] = loop.create_future()
    stop = asyncio.Event()
    started = threading.Event()

    async def run() -> None:
        try:
            async with _serving(config, host, port) as url:
                ready.set_result(url)
                started.set()
                await stop.wait()
        except Exception as err:  # bind errors and the like: re-raised in the caller's thread
            if not ready.done():
                ready.set_exception(err)
            started.set()

    thread = threading.Thread(target=lambda: loop.run_until_complete(run()), name="magnet-sim-server", daemon=True)
    thread.start()
    started.wait()
    try:
        yield ready.result()
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


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
    hints = msgspec.inspect.type_info(Faults)
    for field in hints.fields:
        help_ = field_help(Faults, field.name)
        flag = "--" + field.name.replace("_", "-")
        if field.name == "script":
            parser.add_argument(flag, default="", help=help_ + " (comma-separated)")
        elif field.name == "latency_dist":
            parser.add_argument(flag, default=field.default, choices=["fixed", "exp", "lognormal"], help=help_)
        else:
            kind = {"rpm": int, "seed": int, "model": str, "rate_headers": str}.get(field.name, float)
            parser.add_argument(flag, type=kind, default=field.default, help=help_)
    args = vars(parser.parse_args(argv))
    host, port = args.pop("host"), args.pop("port")
    args["script"] = [s.strip() for s in args["script"].split(",") if s.strip()]
    config = _faults(args)

    async def run() -> None:
        async with _serving(config, host, port) as url:
            print(f"magnet serve-sim: serving {config.model!r} at {url} (faults: {msgspec.json.encode(config).decode()})", flush=True)
            await asyncio.Event().wait()

    loop = _new_loop()
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
    return 0


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
