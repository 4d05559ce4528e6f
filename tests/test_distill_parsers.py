"""Parsers: a corpus of real-looking messy answers, fuzzing, and round trips through every syntax."""

from __future__ import annotations

import json
import keyword
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.parsers import format_bfcl, format_hermes, parse_message, parse_text, validate_call
from engine.errors import BadAnswer
from engine.records import FunctionSpec, Message, ToolCall
from graph.schema import ArgumentError

CORPUS = [json.loads(line) for line in (Path(__file__).parent / "data" / "messy_answers.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("case", CORPUS, ids=[c["note"] for c in CORPUS])
def test_messy_corpus(case):
    if case["expect"] == "bad":
        with pytest.raises(BadAnswer) as err:
            parse_text(case["text"])
        assert err.value.text == case["text"]  # the dead letter can quote what the model wrote
    else:
        got = [{"name": c.name, "arguments": c.arguments} for c in parse_text(case["text"])]
        assert got == case["expect"]


def test_corpus_is_substantial():
    assert len(CORPUS) >= 30 and sum(c["expect"] == "bad" for c in CORPUS) >= 6


def test_positional_arguments_mapped_by_schema_order():
    spec = FunctionSpec(name="f", description="", parameters={"type": "object", "properties": {"a": {}, "b": {}}})
    assert parse_text('[f("x", b=2)]', {"f": spec})[0].arguments == {"a": "x", "b": 2}
    with pytest.raises(BadAnswer):
        parse_text("[f(1, 2, 3)]", {"f": spec})


def test_openai_tool_calls_win_over_content():
    msg = Message(role="assistant", content="[other(x=1)]", tool_calls=[ToolCall(name="f", arguments={"a": 1}, id="c1")])
    assert parse_message(msg) == [ToolCall(name="f", arguments={"a": 1}, id="c1")]


def test_validate_call_coerces_safely_and_rejects():
    spec = FunctionSpec(name="f", description="", parameters={
        "type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string", "enum": ["a", "b"]}},
        "required": ["n"]})
    assert validate_call(ToolCall(name="f", arguments={"n": "3"}), {"f": spec}).arguments == {"n": 3}
    for bad in ({"n": "three"}, {"s": "a"}, {"n": 1, "s": "c"}, {"n": 1, "zz": 0}):
        with pytest.raises(ArgumentError):
            validate_call(ToolCall(name="f", arguments=bad), {"f": spec})
    with pytest.raises(ArgumentError):
        validate_call(ToolCall(name="g", arguments={}), {"f": spec})


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_random_text_never_raises_anything_but_badanswer(text):
    try:
        calls = parse_text(text)
    except BadAnswer:
        return
    assert all(isinstance(c, ToolCall) and isinstance(c.arguments, dict) for c in calls)


# Texts that look like calls: random text spliced into call-shaped templates reaches deeper code paths.
_SHAPES = ["[{}]", "<tool_call>{}</tool_call>", "```json\n{}\n```", '{{"name": "f", "arguments": {}}}', "f({})", "[f(a={})]"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(_SHAPES), st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_call_shaped_garbage_never_raises_anything_but_badanswer(shape, text):
    try:
        parse_text(shape.format(text))
    except BadAnswer:
        pass


_names = st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True).filter(lambda s: not keyword.iskeyword(s) and s not in ("true", "false", "null", "none"))
_scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
_values = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3), max_leaves=8)
_calls = st.lists(st.builds(lambda n, a: ToolCall(name=n, arguments=a), _names, st.dictionaries(_names, _values, max_size=4)),
                  min_size=1, max_size=3)


def _plain(calls):
    return [(c.name, c.arguments) for c in calls]


@settings(max_examples=100, deadline=None)
@given(_calls)
def test_round_trip_every_syntax(calls):
    as_json = json.dumps([{"name": c.name, "arguments": c.arguments} for c in calls])
    texts = {
        "bfcl": format_bfcl(calls),
        "hermes": format_hermes(calls),
        "json_fence": f"```json\n{as_json}\n```",
        "json_prose": f"Calling now: {as_json} ok",
    }
    for syntax, text in texts.items():
        assert _plain(parse_text(text)) == _plain(calls), syntax
    msg = Message(role="assistant", tool_calls=calls)
    assert _plain(parse_message(msg)) == _plain(calls)
