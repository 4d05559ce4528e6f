"""The simulator teacher (hint following, schema-valid output, determinism) and its loopback server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import Any

import aiohttp
import jsonschema
import pytest

from engine.records import FunctionSpec, Message
from engine.sim_server import OUTCOMES, serve_sim, serve_sim_thread
from engine.teachers import make_teacher
from engine.teachers.sim import SimTeacher, example_value, parse_hint

WEATHER = FunctionSpec(name="get_weather", description="Weather for a city.", parameters={
    "type": "object",
    "properties": {"city": {"type": "string", "minLength": 3}, "days": {"type": "integer", "minimum": 1, "maximum": 7},
                   "unit": {"type": "string", "enum": ["C", "F"]}, "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["city", "days", "unit", "tags"],
})
CONVERT = FunctionSpec(name="convert", description="Convert.", parameters={
    "type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]})


def user(text: str) -> Message:
    return Message(role="user", content=text)


async def test_hint_steps_are_made_one_per_message_then_summarised():
    teacher = SimTeacher()
    msgs = [Message(role="system", content="be useful"),
            user('Weather in Paris, then convert. [Hint]: [get_weather(city="Paris", days=2)] then [convert(x=3.5)]')]
    first = await teacher.chat(msgs, [WEATHER, CONVERT])
    assert first.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in first.message.tool_calls] == [("get_weather", {"city": "Paris", "days": 2})]
    msgs += [first.message, Message(role="tool", content='{"temp": 21}', tool_call_id=first.message.tool_calls[0].id, name="get_weather")]
    second = await teacher.chat(msgs, [WEATHER, CONVERT])
    assert [(c.name, c.arguments) for c in second.message.tool_calls] == [("convert", {"x": 3.5})]
    msgs += [second.message, Message(role="tool", content="7.0", tool_call_id=second.message.tool_calls[0].id, name="convert")]
    final = await teacher.chat(msgs, [WEATHER, CONVERT])
    assert final.finish_reason == "stop" and not final.message.tool_calls
    assert "temp 21" in final.message.content and "7.0" in final.message.content  # the summary reports the outputs
    # A new user turn with its own hint starts counting again from that message.
    msgs += [final.message, user("And Rome? [Hint]: [get_weather(city='Rome', days=1)]")]
    again = await teacher.chat(msgs, [WEATHER, CONVERT])
    assert again.message.tool_calls[0].arguments == {"city": "Rome", "days": 1}
    assert final.usage.prompt_tokens == sum(len((m.content or "").split()) for m in msgs[:-2])


@pytest.mark.parametrize(("hint", "expect"), [
    ("[Hint]: miss function", r"none of the available functions"),
    ("[Hint]: missed params", r"need more information"),
    ("[Hint]: miss param: city", r"the city\?"),
    ("[Hint]: irrelevant", r"None of the available functions fits"),
])
async def test_miss_and_irrelevant_hints_answer_in_text(hint, expect):
    done = await SimTeacher().chat([user(f"Book it. {hint}")], [WEATHER])
    assert not done.message.tool_calls and re.search(expect, done.message.content)


def test_hint_parsing_never_evaluates_model_text():
    hint = parse_hint('go [Hint]: [f(x=__import__("os").system("touch /tmp/pwned_by_hint")), math.sqrt(v=[1, 2], w=unknown)]')
    assert [c.name for c in hint.calls] == ["f", "math.sqrt"]
    assert hint.calls[0].arguments == {"x": "__import__('os').system('touch /tmp/pwned_by_hint')"}
    assert hint.calls[1].arguments == {"v": [1, 2], "w": "unknown"}
    assert parse_hint("no hint here") is None
    assert parse_hint("[Hint]: [broken(") .calls == ()


async def test_tools_without_hint_get_schema_valid_arguments_then_a_summary():
    teacher = SimTeacher(seed=3)
    first = await teacher.chat([user("weather please")], [WEATHER, CONVERT])
    call = first.message.tool_calls[0]
    assert call.name == "get_weather"
    jsonschema.validate(call.arguments, WEATHER.parameters)
    forced = await teacher.chat([user("weather please")], [WEATHER, CONVERT], tool_choice={"type": "function", "function": {"name": "convert"}})
    assert forced.message.tool_calls[0].name == "convert"
    msgs = [user("weather please"), first.message, Message(role="tool", content="sunny", tool_call_id=call.id, name="get_weather")]
    assert (await teacher.chat(msgs, [WEATHER])).message.content == "Done. get_weather: sunny."
    assert (await teacher.chat([user("hi")], [WEATHER], tool_choice="none")).message.tool_calls == []


SCHEMAS = [
    {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    {"type": "object", "properties": {"calls": {"type": "array", "minItems": 2, "items": {
        "type": "object", "properties": {"name": {"type": "string", "enum": ["a", "b"]}, "arguments": {"type": "object"}},
        "required": ["name", "arguments"]}}}, "required": ["calls"]},
    {"type": "object", "properties": {"verdicts": {"type": "array", "items": {"$ref": "#/$defs/V"}}}, "required": ["verdicts"],
     "$defs": {"V": {"type": "object", "properties": {"turn": {"type": "integer", "minimum": 0}, "wrong": {"type": "boolean"},
                                                        "error_type": {"anyOf": [{"type": "integer", "maximum": 5}, {"type": "null"}]},
                                                        "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}},
                     "required": ["turn", "wrong", "error_type", "score"]}}},
]


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_response_format_answers_are_valid_json_for_the_schema(schema):
    rf = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    done = await SimTeacher().chat([user("translate this")], response_format=rf)
    jsonschema.validate(json.loads(done.message.content), schema)
    assert json.loads((await SimTeacher().chat([user("x")], response_format={"type": "json_object"})).message.content) == {}


@pytest.mark.parametrize("schema", [
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"type": "integer", "minimum": -5, "exclusiveMaximum": -2},
    {"type": "number", "minimum": 0.5, "maximum": 0.7},
    {"type": ["string", "null"], "format": "date"},
    {"type": "string", "format": "email", "maxLength": 40},
    {"type": "string", "minLength": 20},
    {"type": "array", "items": {"type": "integer"}, "maxItems": 0},
])
def test_example_values_respect_bounds_and_formats(schema):
    for salt in range(25):
        jsonschema.validate(example_value(schema, "field", salt), schema, format_checker=jsonschema.FormatChecker())


def test_example_value_is_deterministic_and_seeded():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}}, "required": ["n", "s"]}
    assert example_value(schema, salt=1) == example_value(schema, salt=1)
    assert len({json.dumps(example_value(schema, salt=s)) for s in range(10)}) > 1


async def test_same_input_same_answer_and_scripts_pin_answers(tmp_path):
    msgs = [user("what's up")]
    a, b = await SimTeacher(seed=7).chat(msgs, [WEATHER]), await SimTeacher(seed=7).chat(msgs, [WEATHER])
    assert a == b
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"match": "capital", "content": "Paris."},
                                  {"match": "rain", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}]))
    teacher = make_teacher(f"sim:{script}")
    assert (await teacher.chat([user("the capital of France?")])).message.content == "Paris."
    rain = await teacher.chat([user("will it rain")], [WEATHER])
    assert rain.message.tool_calls[0].arguments == {"city": "Oslo"} and rain.message.tool_calls[0].id
    assert make_teacher("sim:5").name == "sim:5"


async def _post(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, Any, bytes]:
    async with session.post(url + "/chat/completions", json=body) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


async def test_server_answers_like_the_teacher_and_serves_models_and_health():
    async with serve_sim(seed=4) as url, aiohttp.ClientSession() as session:
        body = {"model": "sim", "messages": [{"role": "user", "content": 'go [Hint]: [get_weather(city="Oslo", days=1)]'}],
                "tools": [WEATHER.to_openai_tool()]}
        status, _, raw = await _post(session, url, body)
        data = json.loads(raw)
        call = data["choices"][0]["message"]["tool_calls"][0]
        assert status == 200 and data["choices"][0]["finish_reason"] == "tool_calls"
        assert call["type"] == "function" and json.loads(call["function"]["arguments"]) == {"city": "Oslo", "days": 1}
        expected = SimTeacher(seed=4).answer([user(body["messages"][0]["content"])], [WEATHER])
        assert call["id"] == expected.message.tool_calls[0].id
        async with session.get(url + "/models") as resp:
            assert (await resp.json())["data"][0]["id"] == "sim"
        async with session.get(url.removesuffix("/v1") + "/health") as resp:
            assert resp.status == 200
        status, _, raw = await _post(session, url, {"messages": "not a list"})
        assert status == 400 and b"bad request body" in raw


async def test_rpm_limit_answers_429_with_retry_after_and_limit_headers():
    async with serve_sim(rpm=3, same_loop=True) as url, aiohttp.ClientSession() as session:
        body = {"model": "sim", "messages": [{"role": "user", "content": "hi"}]}
        answers = [await _post(session, url, body) for _ in range(4)]
    assert [a[0] for a in answers] == [200, 200, 200, 429]
    assert [a[1]["x-ratelimit-remaining-requests"] for a in answers[:3]] == ["2", "1", "0"]
    assert answers[0][1]["x-ratelimit-limit-requests"] == "3"
    headers = answers[3][1]
    assert 59 <= float(headers["retry-after-ms"]) / 1000 <= 60 and headers["retry-after"] == "60"
    assert json.loads(answers[3][2])["error"]["type"] == "rate_limit_exceeded"


async def test_fault_rates_are_seeded_and_every_kind_occurs():
    async def outcomes(seed: int) -> dict[str, int]:
        async with serve_sim(seed=seed, error_rate=0.2, malformed_rate=0.3, truncate_rate=0.2, same_loop=True) as url, \
                aiohttp.ClientSession() as session:
            for _ in range(60):
                try:
                    await _post(session, url, {"messages": [{"role": "user", "content": "hi"}]})
                except aiohttp.ClientPayloadError:
                    pass  # the "cut" fault drops the connection mid-body
            async with session.get(url.removesuffix("/v1") + "/stats") as resp:
                return (await resp.json())["counts"]

    first, second = await outcomes(1), await outcomes(1)
    assert first == second
    for kind in ("ok", "5xx", "html", "badjson", "nofields", "length", "cut"):
        assert first[kind] > 0, kind
    assert first["timeout"] == first["429"] == 0


@pytest.mark.parametrize("dist", ["fixed", "exp", "lognormal"])
def test_latency_draws_have_the_requested_mean(dist):
    from engine.sim_server import Faults, _State

    state = _State(Faults(latency_ms=40, latency_dist=dist))
    draws = [state.latency() for _ in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(0.040, rel=0.08)
    assert (max(draws) == min(draws)) == (dist == "fixed")


async def test_latency_is_applied_to_answers():
    async with serve_sim(latency_ms=250) as url, aiohttp.ClientSession() as session:
        start = time.perf_counter()
        status, _, _ = await _post(session, url, {"messages": [{"role": "user", "content": "hi"}]})
        assert status == 200 and time.perf_counter() - start >= 0.25


def test_hanging_requests_are_released_on_shutdown():
    start = time.perf_counter()
    with serve_sim_thread(script=["timeout"]) as url:
        import urllib.request

        def hang() -> None:
            try:
                urllib.request.urlopen(urllib.request.Request(url + "/chat/completions", data=b'{"messages": []}', method="POST"), timeout=30)
            except Exception:
                pass

        import threading

        thread = threading.Thread(target=hang)
        thread.start()
        time.sleep(0.3)
    thread.join(5)
    assert not thread.is_alive() and time.perf_counter() - start < 5


def test_bad_fault_options_are_user_errors():
    from engine.errors import UserInputError

    with pytest.raises(UserInputError, match="fault script entry 'explode' is unknown"):
        with serve_sim_thread(script=["explode"]):
            pass
    with pytest.raises(UserInputError, match="error_rate"):
        with serve_sim_thread(error_rate=2.0):
            pass
    assert "401" in OUTCOMES


def test_serve_sim_command_prints_its_url_and_serves():
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve-sim", "--port", "0", "--rpm", "100"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    try:
        line = proc.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line)
        assert match, line + proc.stderr.read() if proc.poll() is not None else line
        import urllib.request

        req = urllib.request.Request(match.group(1) + "/chat/completions", method="POST",
                                     data=json.dumps({"messages": [{"role": "user", "content": "hello"}]}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["x-ratelimit-limit-requests"] == "100"
            assert json.loads(resp.read())["choices"][0]["message"]["content"].startswith("Here is my answer")
    finally:
        proc.terminate()
        proc.wait(10)
