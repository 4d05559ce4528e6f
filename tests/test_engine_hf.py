"""The transformers teacher on the real SmolLM2-135M-Instruct checkpoint, and its hermes parser."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from engine import metrics
from engine.errors import BadAnswer, UserInputError
from engine.models import smollm2_checkpoint
from engine.records import FunctionSpec, Message, ToolCall
from engine.teachers.hf_local import HFTeacher, parse_hermes, render

WEATHER = FunctionSpec(name="get_weather", description="Get the current weather for a city",
                       parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


def test_parse_hermes_calls_and_text():
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>{"name": "get_time", "arguments": "{\\"tz\\": \\"CET\\"}"}</tool_call>')
    content, calls = parse_hermes(text)
    assert content == "Let me check."
    assert calls == [ToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_0"),
                     ToolCall(name="get_time", arguments={"tz": "CET"}, id="call_1")]


def test_parse_hermes_accepts_an_unterminated_last_block():
    content, calls = parse_hermes('<tool_call>\n{"name": "f", "arguments": {}}')
    assert content is None and calls == [ToolCall(name="f", arguments={}, id="call_0")]


def test_parse_hermes_plain_text():
    assert parse_hermes("  Paris is the capital.  ") == ("Paris is the capital.", [])


@pytest.mark.parametrize("body, match", [
    ('<tool_call>{"name": "f", "arguments": {"a": 1</tool_call>', "not valid JSON"),
    ('<tool_call>{"arguments": {}}</tool_call>', "no function name"),
    ('<tool_call>["f"]</tool_call>', "no function name"),
    ('<tool_call>{"name": "f", "arguments": [1]}</tool_call>', "arguments of type list"),
    ('<tool_call>{"name": "f", "arguments": __import__("os").getcwd()}</tool_call>', "not valid JSON"),
])
def test_parse_hermes_rejects_bad_blocks(body, match):
    with pytest.raises(BadAnswer, match=match) as info:
        parse_hermes(body)
    assert info.value.text == body


def test_render_starts_the_forced_answer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_checkpoint())
    ask = [Message(role="user", content="Weather in Paris?")]
    prompt, prefix = render(tok, ask, [WEATHER], {"type": "function", "function": {"name": "get_weather"}}, None)
    assert prefix == '<tool_call>\n{"name": "get_weather", "arguments": ' and prompt.endswith("<|im_start|>assistant\n" + prefix)
    assert "<tools>" in prompt and '"name": "get_weather"' in prompt
    assert render(tok, ask, [WEATHER], "required", None)[1] == prefix  # one tool: required names it
    assert render(tok, ask, [WEATHER, WEATHER], "required", None)[1] == '<tool_call>\n{"name": "'
    plain, none = render(tok, ask, [WEATHER], "none", None)
    assert none == "" and "<tools>" not in plain
    assert render(tok, ask, None, None, {"type": "json_object"})[1] == "{"
    with pytest.raises(UserInputError, match="names no function"):
        render(tok, ask, [WEATHER], {"type": "function"}, None)


def test_bad_options_and_folders_are_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="no config.json"):
        HFTeacher(tmp_path)
    with pytest.raises(UserInputError, match="rpm"):
        HFTeacher(tmp_path, rpm=10)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def teacher():
    t = HFTeacher(smollm2_checkpoint(), batch_size=4, batch_wait_ms=50)
    yield t
    await t.aclose()


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_chat_answers_with_exact_usage(teacher):
    metrics.reset_metrics()
    messages = [Message(role="user", content="What is the capital of France? Answer in one short sentence.")]
    completion = await teacher.chat(messages, max_tokens=32)
    assert completion.finish_reason == "stop"
    assert "Paris" in completion.message.content
    tok = teacher.tokenizer
    prompt_ids = tok.apply_chat_template([{"role": "user", "content": messages[0].content}], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"]
    assert completion.usage.prompt_tokens == len(prompt_ids)
    answer_ids = tok(completion.message.content, add_special_tokens=False)["input_ids"]
    assert completion.usage.completion_tokens == len(answer_ids) + 1  # + <|im_end|>
    assert metrics.METRICS.prompt_tokens == len(prompt_ids) and metrics.METRICS.requests == 1


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_concurrent_requests_share_batches(teacher):
    before = len(teacher.batches)
    countries = ["France", "Italy", "Spain", "Germany", "Japan", "Egypt"]
    questions = [f"What is the capital of {c}? Answer in one short sentence." for c in countries]
    answers = await asyncio.gather(*[teacher.chat([Message(role="user", content=q)], max_tokens=32) for q in questions])
    sizes = teacher.batches[before:]
    assert sum(sizes) == 6 and max(sizes) > 1 and max(sizes) <= 4
    assert all(a.message.content and a.finish_reason == "stop" for a in answers)


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_forced_function_is_a_parsed_tool_call_or_a_quoted_bad_answer(teacher):
    messages = [Message(role="user", content="What's the weather like in Paris today?")]
    try:
        completion = await teacher.chat(messages, [WEATHER], tool_choice="required", max_tokens=48)
    except BadAnswer as err:  # a 135M model may ramble inside the arguments: then the text is quoted
        assert err.text.startswith('<tool_call>\n{"name": "get_weather", "arguments": ')
    else:
        assert completion.finish_reason == "tool_calls"
        assert [c.name for c in completion.message.tool_calls] == ["get_weather"]
        assert isinstance(completion.message.tool_calls[0].arguments, dict)
