"""OpenAIHTTPTeacher against the real loopback simulator server, one fault kind at a time;
teacher specs and TOML configs; API keys kept out of names, reprs, errors, logs and metrics."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import aiohttp
import pytest

from engine import metrics
from engine.errors import BadAnswer, FatalTeacherError, RetryableError, UserInputError
from engine.records import FunctionSpec, Message
from engine.sim_server import serve_sim
from engine.teachers import make_teacher
from engine.teachers.openai_http import OpenAIHTTPTeacher
from engine.teachers.spec import TeacherConfig, load_config, parse_spec

SECRET = "sk-test-Zq8FAKEKEYnever2beSEEN"
WEATHER = FunctionSpec(name="get_weather", description="Weather for a city.", parameters={
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]})


def user(text: str) -> Message:
    return Message(role="user", content=text)


@pytest.fixture(autouse=True)
def _fresh_metrics():
    metrics.reset_metrics()


async def _stats(url: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(url.removesuffix("/v1") + "/stats") as resp:
        return await resp.json()


def _teacher(url: str, **options) -> OpenAIHTTPTeacher:
    options.setdefault("backoff_s", 0.05)
    return make_teacher(f"openai:sim@{url}", **options)


async def test_chat_and_tool_calls_round_trip_through_http():
    async with serve_sim(seed=2) as url:
        teacher = _teacher(url, price_in=2.0, price_out=8.0)
        try:
            msgs = [user('Weather in Oslo for 2 days? [Hint]: [get_weather(city="Oslo", days=2)]')]
            first = await teacher.chat(msgs, [WEATHER], temperature=0.3, max_tokens=64, seed=5)
            call = first.message.tool_calls[0]
            assert first.finish_reason == "tool_calls" and call.name == "get_weather"
            assert call.arguments == {"city": "Oslo", "days": 2} and call.id.startswith("call_")
            msgs += [first.message, Message(role="tool", content='{"temp": 3}', tool_call_id=call.id, name="get_weather")]
            final = await teacher.chat(msgs, [WEATHER])
            assert final.message.content == 'Done. get_weather: temp 3.' and final.model == "sim"
        finally:
            await teacher.aclose()
    m = metrics.METRICS
    assert m.requests == 2 and m.retries == 0 and m.rate_limited == 0
    assert m.prompt_tokens == first.usage.prompt_tokens + final.usage.prompt_tokens > 0
    assert m.cost_usd == pytest.approx((m.prompt_tokens * 2.0 + m.completion_tokens * 8.0) / 1e6)


async def test_429_retry_after_is_honoured_by_every_sender():
    async with serve_sim(script=["ok", "429"], retry_after_s=0.8) as url:
        teacher = _teacher(url, max_concurrency=4)
        try:
            await teacher.chat([user("warm up")])  # the probe; afterwards four senders run at once
            t0 = time.monotonic()
            limited = asyncio.ensure_future(teacher.chat([user("first")]))
            await asyncio.sleep(0.2)  # the 429 has arrived; these must wait for its Retry-After
            others = await asyncio.gather(*(teacher.chat([user(f"later {i}")]) for i in range(3)))
            await limited
        finally:
            await teacher.aclose()
        arrivals = (await _stats(url))["arrivals"]
    assert len(others) == 3 and metrics.METRICS.rate_limited == 1 and metrics.METRICS.retries == 1
    limited_at = arrivals[1]
    assert limited_at >= t0
    after = arrivals[2:]
    assert len(after) == 4 and min(after) >= limited_at + 0.8 - 0.02, [a - limited_at for a in after]
    assert 2.0 <= teacher.limiter.concurrency < 4.0  # halved by the 429, then recovering additively


async def test_5xx_is_retried_then_succeeds():
    async with serve_sim(script=["5xx", "5xx", "ok"]) as url:
        teacher = _teacher(url)
        try:
            done = await teacher.chat([user("hello")])
        finally:
            await teacher.aclose()
        counts = (await _stats(url))["counts"]
    assert done.message.content and counts["5xx"] == 2 and counts["ok"] == 1
    assert metrics.METRICS.retries == 2 and metrics.METRICS.requests == 3


async def test_5xx_exhausting_retries_raises_with_attempts():
    async with serve_sim(error_rate=1.0) as url:
        teacher = _teacher(url, max_retries=2)
        try:
            with pytest.raises(RetryableError, match=r"answered 50[023]") as info:
                await teacher.chat([user("hello")])
        finally:
            await teacher.aclose()
    assert info.value.attempts == 3 and info.value.status in (500, 502, 503)


async def test_timeout_is_retried_and_reported_with_the_url():
    async with serve_sim(script=["timeout", "ok"]) as url:
        teacher = _teacher(url, timeout_s=0.4)
        try:
            start = time.monotonic()
            assert (await teacher.chat([user("hello")])).message.content
            assert time.monotonic() - start >= 0.4
        finally:
            await teacher.aclose()
    async with serve_sim(timeout_rate=1.0) as url:
        teacher = _teacher(url, timeout_s=0.3, max_retries=0)
        try:
            with pytest.raises(RetryableError, match=r"no answer from http://127\.0\.0\.1:\d+/v1/chat/completions within 0\.3 s"):
                await teacher.chat([user("hello")])
        finally:
            await teacher.aclose()


@pytest.mark.parametrize(("fault", "error", "pattern"), [
    ("html", RetryableError, r"not JSON \(text/html.*'<html><head><title>502 Bad Gateway"),
    ("badjson", RetryableError, r"not JSON \(application/json.*'\{\"id\":\"chatcmpl-sim"),
    ("cut", RetryableError, r"dropped mid-answer \(truncated body\)"),
    ("nofields", BadAnswer, r"no choices\[0\]\.message: '\{\"id\":\"chatcmpl-sim"),
    ("length", BadAnswer, r"^truncated: .*finish_reason=length"),
    ("filter", BadAnswer, r"^filtered: "),
    ("badargs", BadAnswer, r"tool call 'broken' has arguments that are not valid JSON: '\{\"city\": \"Paris\", \"days\": 3'"),
])
async def test_malformed_answers_become_clear_errors_and_are_retried(fault, error, pattern):
    async with serve_sim(script=[fault, "ok"]) as url:
        teacher = _teacher(url)
        try:
            assert (await teacher.chat([user("hello")])).message.content  # retried once, then fine
        finally:
            await teacher.aclose()
    async with serve_sim(script=[fault] * 5) as url:
        teacher = _teacher(url, max_retries=0, max_bad_answer_retries=0)
        try:
            with pytest.raises(error, match=pattern) as info:
                await teacher.chat([user("hello")])
        finally:
            await teacher.aclose()
    assert info.value.attempts == 1
    if fault == "badargs":
        assert info.value.text == '{"city": "Paris", "days": 3'


async def test_unreachable_server_names_the_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    teacher = _teacher(f"http://127.0.0.1:{port}/v1", max_retries=1)
    try:
        with pytest.raises(RetryableError, match=rf"cannot connect to http://127\.0\.0\.1:{port}/v1/chat/completions.*is the server running") as info:
            await teacher.chat([user("hello")])
    finally:
        await teacher.aclose()
    assert info.value.attempts == 2


async def test_key_never_appears_in_name_repr_errors_logs_or_metrics(monkeypatch, caplog):
    monkeypatch.setenv("MAGNET_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    async with serve_sim(script=["5xx", "401"]) as url:
        teacher = make_teacher({"spec": f"openai:sim@{url}", "api_key_env": "MAGNET_TEST_KEY", "backoff_s": 0.01})
        try:
            with pytest.raises(FatalTeacherError) as info:
                await teacher.chat([user("hello")])
        finally:
            await teacher.aclose()
    message = str(info.value)
    # The server echoed the bearer token it received (so the key was really sent); we scrubbed it.
    assert "Incorrect API key provided: ***" in message and "MAGNET_TEST_KEY" in message
    assert info.value.attempts == 2
    for text in (message, repr(info.value), teacher.name, repr(teacher), caplog.text, str(metrics.METRICS.summary()),
                 str(load_config({"spec": f"openai:sim@{url}", "api_key_env": "MAGNET_TEST_KEY"}))):
        assert SECRET not in text
    assert "retrying" in caplog.text  # the retry was logged, without the key


def test_remote_teacher_without_key_is_a_user_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserInputError, match="set the environment variable OPENAI_API_KEY"):
        make_teacher("openai:gpt-4o-mini")
    monkeypatch.setenv("GEMINI_KEY", SECRET)
    gemini = make_teacher("openai:gemini-2.0-flash@https://generativelanguage.googleapis.com/v1beta/openai/", api_key_env="GEMINI_KEY")
    assert gemini.name == "openai:gemini-2.0-flash@https://generativelanguage.googleapis.com/v1beta/openai" and SECRET not in repr(gemini)
    assert gemini.url == "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"


@pytest.mark.parametrize(("spec", "pattern"), [
    ("opnai:gpt", r"teacher spec 'opnai:gpt' has unknown backend 'opnai'; use one of sim, .*openai:MODEL@URL, vllm:MODEL_OR_DIR, hf:DIR or a \.toml "
                  r"file"),
    ("", r"teacher spec '' is empty"),
    ("openai:", r"names no model; write openai:MODEL"),
    ("openai:gpt@localhost:8000/v1", r"base URL 'localhost:8000/v1' without http"),
    ("vllm:", r"names no model; write vllm:MODEL_OR_DIR"),
    ("hf:", r"write hf:DIR"),
    ("sim:no/such/script.json", r"neither a seed nor an existing script file"),
])
def test_malformed_specs_are_one_line_user_errors(spec, pattern):
    with pytest.raises(UserInputError, match=pattern) as info:
        make_teacher(spec)
    assert "\n" not in str(info.value)


def test_spec_parsing():
    assert parse_spec("openai:gpt-4o") == parse_spec("openai:gpt-4o@https://api.openai.com/v1/")
    assert parse_spec("openai:m@http://127.0.0.1:8000/v1").base_url == "http://127.0.0.1:8000/v1"
    assert parse_spec("vllm:/models/qwen").target == "/models/qwen"
    assert parse_spec("sim").backend == "sim"


def test_toml_config_is_typed_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    good = tmp_path / "teacher.toml"
    good.write_text('[teacher]\nspec = "openai:gpt-4o-mini"\nrpm = 500\ntpm_in = 200000\ntpm_out = 50000\n'
                    'max_concurrency = 16\nprice_in = 0.15\nprice_out = 0.6\ntimeout_s = 30\nmax_retries = 3\n')
    teacher = make_teacher(good)
    assert isinstance(teacher, OpenAIHTTPTeacher) and teacher.max_retries == 3 and teacher.limiter.max_concurrency == 16
    assert teacher.limiter.requests.rate == pytest.approx(500 * 0.99 / 60) and teacher.price_out == 0.6
    assert make_teacher(str(good), max_concurrency=4).limiter.max_concurrency == 4  # overrides win
    cases = {
        "typo.toml": ('[teacher]\nspec = "sim"\nrpmm = 5\n', r"teacher config '.*typo\.toml' is invalid: Object contains unknown field `rpmm`.*valid "
                                                             r"keys are spec, rpm"),
        "type.toml": ('[teacher]\nspec = "sim"\nrpm = "fast"\n', r"Expected `float \| null`, got `str` - at `\$.rpm`"),
        "neg.toml": ('[teacher]\nspec = "sim"\nmax_concurrency = 0\n', r"Expected `int` >= 1 - at `\$.max_concurrency`"),
        "broken.toml": ('[teacher\nspec = "sim"\n', r"is not valid TOML"),
        "notable.toml": ('spec = "sim"\n', r"has no \[teacher\] table"),
        "nospec.toml": ('[teacher]\nrpm = 5\n', r"has no spec"),
        "key.toml": (f'[teacher]\nspec = "openai:gpt"\napi_key = "{SECRET}"\n', r"contains api_key; put the key in an environment variable"),
        "badspec.toml": ('[teacher]\nspec = "opnai:gpt"\n', r"unknown backend 'opnai'"),
    }
    for name, (text, pattern) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(UserInputError, match=pattern) as info:
            make_teacher(path)
        assert "\n" not in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(UserInputError, match=r"'.*missing\.toml' does not exist"):
        make_teacher(tmp_path / "missing.toml")


def test_config_fields_carry_help_text():
    from engine.config_cli import describe

    lines = describe(TeacherConfig).splitlines()
    assert len(lines) == len(TeacherConfig.__struct_fields__)
    assert all(line.split(": ", 1)[1] for line in lines)


async def test_configured_rpm_is_respected_against_a_server_enforced_limit():
    # Server: 4 requests per rolling 4 s (announced as 60/min); client configured for 60/min.
    async with serve_sim(rpm=4, window_s=4.0) as url:
        teacher = _teacher(url, rpm=60)
        try:
            await asyncio.gather(*(teacher.chat([user(f"q{i}")]) for i in range(7)))
        finally:
            await teacher.aclose()
        stats = await _stats(url)
    assert stats["counts"]["429"] == 0 and stats["counts"]["ok"] == 7
    arrivals = stats["arrivals"]
    assert arrivals[-1] - arrivals[0] >= 6 * 60 / 60 * 0.97


async def test_limit_learned_from_headers_avoids_429s():
    # No limit configured: the probe's reply announces 90/min (6 per 4 s window) and the client follows it.
    async with serve_sim(rpm=6, window_s=4.0) as url:
        teacher = _teacher(url, max_concurrency=32)
        try:
            results = await asyncio.gather(*(teacher.chat([user(f"q{i}")]) for i in range(12)))
        finally:
            await teacher.aclose()
        stats = await _stats(url)
    assert len(results) == 12 and stats["counts"]["ok"] == 12
    assert stats["counts"]["429"] <= 1
    assert teacher.limiter.learned == {"requests": 90.0}


def test_vllm_and_hf_specs_dispatch_lazily_to_their_backends(tmp_path):
    from engine.teachers.vllm_server import VLLMServerTeacher

    teacher = make_teacher("vllm:smollm2", max_concurrency=8, options={"max_model_len": 1024})
    assert isinstance(teacher, VLLMServerTeacher) and teacher.name == "vllm:smollm2"  # constructed, not started
    with pytest.raises(UserInputError, match="config.json"):
        make_teacher(f"hf:{tmp_path}")  # reached HFTeacher, which checks the folder
    from engine.teachers.vllm_inproc import VLLMInprocTeacher

    inproc = make_teacher("vllm-inproc:smollm2", options={"max_model_len": 1024})
    assert isinstance(inproc, VLLMInprocTeacher) and inproc.name == "vllm-inproc:smollm2" and inproc.engine is None
    with pytest.raises(UserInputError, match="vllm-inproc teacher option.* rpm unknown"):
        make_teacher("vllm-inproc:smollm2", rpm=100)


async def test_sim_spec_with_latency():
    teacher = make_teacher("sim", latency_ms=30)
    start = time.perf_counter()
    await teacher.chat([user("hi")])
    assert time.perf_counter() - start >= 0.03


async def test_wrong_base_url_is_fatal_with_a_hint():
    async with serve_sim() as url:
        teacher = _teacher(url.removesuffix("/v1"))
        try:
            with pytest.raises(FatalTeacherError, match=r"answered 404 for model 'sim'.*base URL ends in /v1") as info:
                await teacher.chat([user("hello")])
        finally:
            await teacher.aclose()
    assert info.value.attempts == 1 and metrics.METRICS.retries == 0


@pytest.mark.parametrize("fault", ["length", "filter", "badargs"])
async def test_bad_answer_still_counts_its_tokens_and_cost(fault):
    """A lost answer was still generated and billed: its usage reaches METRICS and the error."""
    async with serve_sim(seed=3) as url:  # the same request answered normally: the usage to expect
        teacher = _teacher(url)
        try:
            expected = (await teacher.chat([user("hello there")])).usage
        finally:
            await teacher.aclose()
    assert expected.prompt_tokens > 0 and expected.completion_tokens > 0
    metrics.reset_metrics()
    async with serve_sim(seed=3, script=[fault]) as url:
        teacher = _teacher(url, max_retries=0, max_bad_answer_retries=0, price_in=2.0, price_out=10.0)
        try:
            with pytest.raises(BadAnswer) as info:
                await teacher.chat([user("hello there")])
        finally:
            await teacher.aclose()
    spent = info.value.usage
    if fault != "badargs":  # badargs swaps the message for a broken call but keeps the reply's usage block
        assert spent == expected
    assert spent is not None and spent.completion_tokens > 0
    m = metrics.METRICS
    assert (m.requests, m.prompt_tokens, m.completion_tokens) == (1, spent.prompt_tokens, spent.completion_tokens)
    assert m.cost_usd == pytest.approx((spent.prompt_tokens * 2.0 + spent.completion_tokens * 10.0) / 1e6)
