"""The per-path job on real toolkits: translation, hinted positives, verification, negatives.

Teachers are the deterministic simulator, plus small scripted doubles (subclasses answering
specific prompts sensibly) where the simulator's placeholder text cannot do a role.
"""

from __future__ import annotations

import re

import pytest

from distill.generate_config import GenerateConfig
from distill.pipeline import Distiller
from engine.errors import JobFailed
from engine.records import Message, PathTurn, SignaturePath
from engine.teacher import Completion, Usage
from engine.teachers.sim import SimTeacher
from graph.toolkit import ToolPool
from graph.toolkits import builtin_toolkits


@pytest.fixture(scope="module")
def pool():
    return ToolPool([builtin_toolkits()["travel"]])


def _path(pid, *turns, kind="multi_turn", distractors=()):
    return SignaturePath(id=pid, kind=kind, turns=list(turns), toolkits=["travel"], seed=7, distractors=list(distractors))


def _kinds(records):
    out = {}
    for kind, rec in records:
        out.setdefault(kind, []).append(rec)
    return out


class UserDouble(SimTeacher):
    """The simulator, except that it role-plays the user sensibly in the miss_param prompts."""

    async def chat(self, messages, tools=None, **kw):
        prompt = messages[0].content or ""
        if kw.get("response_format") and "leaves out the value" in prompt:
            return _text('{"query": "Please look up the airport code of the city I am flying from."}')
        if kw.get("response_format") and (m := re.search(r"gives it: (.+)\.\n", prompt)):
            return _text('{"query": "Sorry, it is %s."}' % m.group(1))
        return await super().chat(messages, tools, **kw)


def _text(content):
    return Completion(message=Message(role="assistant", content=content), usage=Usage(prompt_tokens=5, completion_tokens=5))


async def test_positive_is_verified_with_hints_stripped_and_negative_pairs(pool):
    path = _path("p-base", PathTurn(functions=["list_airports"]), PathTurn(functions=["get_airport_code"]),
                 PathTurn(functions=[], label="miss_func", missing=["search_flights"]), PathTurn(functions=["search_flights"]))
    d = Distiller(pool, SimTeacher(), GenerateConfig(negatives="perturb"))
    recs = _kinds(await d.run_path(path))
    episode, = recs["episodes"]
    assert [t.label for t in episode.turns] == ["call", "call", "miss_func", "call"]
    # get_airport_code's city came from list_airports' output (the simulator only writes placeholders)
    cities = [a["city"] for a in episode.turns[0].outputs[0]["airports"]]
    assert episode.turns[1].calls[0].arguments["city"] in cities
    pos = next(t for t in recs["trajectories"] if t.polarity == "positive")
    assert pos.verification.ok and pos.source == "teacher_hinted"
    assert not any("[Hint]" in (m.content or "") for m in pos.messages)
    assert pos.hints[2] == "miss function" and pos.hints[0].startswith("[list_airports(")
    users = [m.content for m in pos.messages if m.role == "user"]
    assert users == [t.query for t in episode.turns]
    assert sorted(t.name for t in pos.tools) == sorted(t.name for t in episode.tools)
    # BFCL's miss_func: the function is absent until the turn that adds it back (last), with BFCL's follow-up
    assert [("search_flights" in names) for names in pos.turn_tools] == [False, False, False, True]
    assert pos.turn_tools[3][-1] == "search_flights"
    assert episode.turns[3].query == "I have updated some more functions you can choose from. What about now?"
    assert not any(m.role == "system" for m in pos.messages)  # the system prompt belongs to the rendering mode
    pair, = recs["pairs"]
    assert pair.chosen.id == pos.id and pair.episode_id == episode.id == pair.rejected.episode_id
    assert pair.rejected.source.startswith("perturbed:") and not pair.rejected.verification.ok
    assert pair.rejected.error_types


async def test_tool_order_is_shuffled_by_seed(pool):
    path = _path("p-one", PathTurn(functions=["list_airports"]), kind="multiple", distractors=["get_airport_code", "get_booking"])
    orders = set()
    for seed in range(4):
        recs = _kinds(await Distiller(pool, SimTeacher(), GenerateConfig(seed=seed, negatives="none")).run_path(path))
        orders.add(tuple(t.name for t in recs["trajectories"][0].tools))
    assert len(orders) > 1


async def test_miss_param_turn_asks_then_gets_the_value(pool):
    path = _path("p-param", PathTurn(functions=["list_airports"]),
                 PathTurn(functions=[], label="miss_param", missing=["get_airport_code.city"]),
                 PathTurn(functions=["get_airport_code"]))
    recs = _kinds(await Distiller(pool, UserDouble(), GenerateConfig(negatives="perturb")).run_path(path))
    ep, = recs["episodes"]
    miss, follow = ep.turns[1], ep.turns[2]
    city = follow.calls[0].arguments["city"]
    assert miss.label == "miss_param" and miss.missing == ["city"] and city not in miss.query
    assert city in follow.query and follow.outputs[0]["airport_code"]
    pos = recs["trajectories"][0]
    assert pos.verification.ok
    assert "more information" in pos.messages[[m.role for m in pos.messages].index("user", 4) + 1].content
    assert any(t.source == "perturbed:call_on_miss" for t in recs["trajectories"][1:]) or recs["pairs"]


async def test_irrelevance_offers_only_distractors_and_expects_no_call(pool):
    path = _path("p-irr", PathTurn(functions=["book_flight"], label="miss_func", missing=["book_flight"]),
                 kind="irrelevance", distractors=["list_airports", "get_booking"])
    recs = _kinds(await Distiller(pool, SimTeacher(), GenerateConfig(negatives="none")).run_path(path))
    pos, = recs["trajectories"]
    assert sorted(t.name for t in pos.tools) == ["get_booking", "list_airports"]
    assert pos.verification.ok and not any(m.tool_calls for m in pos.messages)


class WrongCaller(SimTeacher):
    """Ignores hints: calls get_airport_code for a real but wrong city, then reports an error."""

    async def chat(self, messages, tools=None, **kw):
        if kw.get("response_format"):
            return await super().chat(messages, tools, **kw)
        if messages[-1].role == "user":
            from engine.records import ToolCall
            return Completion(message=Message(role="assistant", tool_calls=[ToolCall(name="get_airport_code", arguments={"city": "Sydney"}, id="x")]))
        return _text("There was an error, sorry.")


async def test_unverifiable_rollouts_become_job_failed_with_reason(pool):
    path = _path("p-bad", PathTurn(functions=["list_airports"]), kind="single")
    with pytest.raises(JobFailed) as err:
        await Distiller(pool, WrongCaller(), GenerateConfig(rollout_attempts=2)).run_path(path)
    assert err.value.stage == "verify" and "not verified after 2 rollouts" in str(err.value)


class Garbage(SimTeacher):
    async def chat(self, messages, tools=None, **kw):
        return _text("I am a tiny model and I like turtles")


async def test_unparsable_translation_is_dead_lettered_quoting_the_text(pool):
    path = _path("p-garbage", PathTurn(functions=["list_airports"]), kind="single")
    with pytest.raises(JobFailed) as err:
        await Distiller(pool, Garbage(), GenerateConfig(translate_attempts=2)).run_path(path)
    assert err.value.stage == "translate" and err.value.attempts == 2 and "turtles" in str(err.value)


class Judge(SimTeacher):
    """Marks turn 0 wrong (type 5) whenever asked to judge."""

    async def chat(self, messages, tools=None, **kw):
        if "strict judge" in (messages[0].content or ""):
            return _text('{"verdicts": [{"turn": 0, "wrong": true, "error_type": 5, "reason": "wrong function"}]}')
        return await super().chat(messages, tools, **kw)


async def test_mined_negative_from_student_mistakes(pool):
    path = _path("p-mined", PathTurn(functions=["list_airports"]), PathTurn(functions=["get_airport_code"]))
    # The unhinted simulator student calls the first tool offered with placeholder arguments: a real mistake.
    d = Distiller(pool, SimTeacher(), GenerateConfig(negatives="mined", student="sim:3", student_rollouts=2),
                  student=SimTeacher(seed=3), judge=Judge())
    recs = _kinds(await d.run_path(path))
    pair, = recs["pairs"]
    rej = pair.rejected
    assert rej.source == "student_mined" and rej.error_types == ["missed_function_or_param"]
    assert rej.teacher == "sim:3" and not rej.verification.ok
    assert rej.hints[0] != pair.chosen.hints[0]  # the student's own wrong call was the hint
    assert not any("[Hint]" in (m.content or "") for m in rej.messages)


def test_config_file_flags_override_and_stratum_targets(tmp_path):
    from distill.cli import load_config, strata_targets
    from engine.errors import UserInputError

    toml = tmp_path / "gen.toml"
    toml.write_text('teacher = "sim"\nseed = 4\nmulti = 5\nirrelevance = 1\npaths = 0\n[teacher_options]\nrpm = 60\n')
    config, _ = load_config(["--config", str(toml), "--out", str(tmp_path / "r"), "--seed", "9", "--tpm", "1000"])
    assert (config.teacher, config.seed, config.teacher_options) == ("sim", 9, {"rpm": 60, "tpm": 1000})
    assert strata_targets(config) == {"multi_turn.base": 1, "multi_turn.nested": 1, "multi_turn.long": 1,
                                      "multi_turn.miss_func": 1, "multi_turn.miss_param": 1, "irrelevance": 1}
    config, _ = load_config(["--out", "x", "--teacher", "sim", "--paths", "100"])
    targets = strata_targets(config)
    assert sum(targets.values()) == 100 and config.negative_mode == "perturb"
    # the paper's Table 1: 20k single-turn (four kinds alike), 7.8k multi-turn, 6.2k irrelevance
    multi = sum(v for k, v in targets.items() if k.startswith("multi_turn"))
    assert targets["irrelevance"] == 18 and abs(multi - 23) <= 1
    config, _ = load_config(["--out", "x", "--teacher", "sim", "--single", "5"])
    assert strata_targets(config)["single"] == 2 and sum(strata_targets(config).values()) == 5
    with pytest.raises(UserInputError, match="does not exist"):
        load_config(["--out", "x", "--config", str(toml.with_name("missing.toml"))])
    toml.write_text("seed = 'four'\n")
    with pytest.raises(UserInputError, match="seed"):
        load_config(["--out", "x", "--config", str(toml)])


def test_prompts_are_overridable_by_file_name(tmp_path):
    from distill.prompts import Prompts
    from engine.errors import UserInputError

    assert {"back_translation", "forth_translation", "positive_system", "negative_system",
            "judge_errors"} <= set(Prompts().names())
    (tmp_path / "follow_up.txt").write_text("Say more about $query")
    prompts = Prompts(tmp_path)
    assert prompts.render("follow_up", query="x", situation="s", goal="g") == "Say more about x"
    assert Prompts().text("follow_up").startswith("You play the USER")  # the packaged file is untouched
    (tmp_path / "follow_up.txt").write_text("Uses $nope")
    with pytest.raises(UserInputError, match="nope"):
        Prompts(tmp_path).render("follow_up", query="x")
    (tmp_path / "typo_name.txt").write_text("x")
    with pytest.raises(UserInputError, match="typo_name"):
        Prompts(tmp_path)
    with pytest.raises(UserInputError, match="does not exist"):
        Prompts(tmp_path / "absent")


class InvalidCaller(SimTeacher):
    """Follows the rules for translation, but calls with an argument the schema does not have."""

    async def chat(self, messages, tools=None, **kw):
        if kw.get("response_format") or messages[-1].role != "user":
            return await super().chat(messages, tools, **kw)
        return Completion(message=Message(role="assistant", content='[list_airports(country="France")]'))


async def test_schema_invalid_calls_fail_verification(pool):
    from distill.parsers import parse_message
    from distill.prompts import Prompts
    from distill.rollout import RolloutParams, reference_hint, roll_out
    from distill.spend import Spend
    from distill.translate import Translator
    from distill.verify import replay_reference, verify

    path = _path("p-invalid", PathTurn(functions=["list_airports"]), kind="single")
    episode = await Translator(SimTeacher(), pool, Prompts(), GenerateConfig()).translate(path, Spend())
    hints = [reference_hint(t, episode.kind) for t in episode.turns]
    params = RolloutParams(max_tokens=64, max_steps=3, answer_retries=0)
    rollout = await roll_out(InvalidCaller(), episode, pool, hints, params, parse_message)
    check = verify(rollout, episode, replay_reference(pool, episode), ["error"])
    assert not check.ok and not check.schema_valid and "country" in " ".join(check.errors)
    tool_msgs = [m.content for m in rollout.messages if m.role == "tool"]
    assert tool_msgs and tool_msgs[0].startswith("Error: ")  # the model is told, as an API would


class Truncating(SimTeacher):
    """Writes good translations, then every rollout answer is cut off (the backend raises BadAnswer)."""

    async def chat(self, messages, tools=None, **kw):
        if kw.get("response_format"):
            return await super().chat(messages, tools, **kw)
        from engine.errors import BadAnswer
        raise BadAnswer("truncated: the answer hit max_tokens", text='<tool_call>{"name": "list_air')


async def test_truncated_rollout_answers_end_as_a_verify_dead_letter(pool):
    path = _path("p-trunc", PathTurn(functions=["list_airports"]), kind="single")
    with pytest.raises(JobFailed) as err:
        await Distiller(pool, Truncating(), GenerateConfig(rollout_attempts=1, answer_retries=1)).run_path(path)
    assert err.value.stage == "verify" and "truncated" in str(err.value)


class Recorder(SimTeacher):
    """The simulator, remembering what each rollout request looked like."""

    def __init__(self):
        super().__init__()
        self.requests = []

    async def chat(self, messages, tools=None, **kw):
        if not kw.get("response_format"):
            self.requests.append((messages, tools))
        return await super().chat(messages, tools, **kw)


async def test_prompt_mode_rollouts_send_bfcls_prompt_and_text_calls(pool):
    from engine.bfcl_prompts import DEFAULT_SYSTEM_PROMPT

    path = _path("p-prompt", PathTurn(functions=["list_airports"]), PathTurn(functions=["get_airport_code"]))
    teacher = Recorder()
    recs = _kinds(await Distiller(pool, teacher, GenerateConfig(negatives="none", rollout_mode="prompt")).run_path(path))
    assert recs["trajectories"][0].verification.ok
    messages, tools = teacher.requests[-1]
    assert tools is None and messages[0].content.startswith(DEFAULT_SYSTEM_PROMPT.split("{")[0])
    assert "'name': 'get_airport_code'" in messages[0].content and "[Hint]" in messages[0].content  # + hint rules
    assert any(m.role == "assistant" and (m.content or "").startswith("[list_airports(") for m in messages)
    assert all(not m.tool_calls for m in messages)  # calls and outputs are text, as BFCL's prompt mode sends them
