"""`magnet export`: every format in both rendering modes from a real run directory, checked structurally."""

from __future__ import annotations

import ast
import importlib
import json
import os
import sys

import _records_factory as F
import orjson
import pytest

from engine.cli import main as cli
from engine.errors import UserInputError
from engine.export import BFCL_FILE, export
from engine.store import RunStore

CALLS_BY_TURN = F.turn_calls()


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    with RunStore.open(run, config_fingerprint="export-test") as store:
        for i in range(4):
            store.put("trajectories", F.trajectory(i, with_ids=i % 2 == 0))  # odd ones: the teacher gave no call ids
            store.put("trajectories", F.trajectory(i, "negative"))
            store.put("pairs", F.pair(i))
        store.put("episodes", F.episode(0))
    return run


@pytest.fixture
def miss_run(tmp_path):
    """Records in the current contract (no system message) whose tools grow at turn 2."""
    run = tmp_path / "miss_run"
    with RunStore.open(run, config_fingerprint="export-test") as store:
        store.put("trajectories", F.miss_func_trajectory(0))
        store.put("pairs", F.miss_func_pair(0))
        store.put("pairs", F.miss_func_pair(1, part_first=True))
    return run


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_openai_messages(messages: list[dict]) -> list[list[dict]]:
    """Validate OpenAI chat wire form; return the tool calls of each user turn."""
    answered, open_calls, turns = set(), {}, []
    for msg in messages:
        role = msg["role"]
        assert role in ("system", "user", "assistant", "tool")
        if role == "user":
            turns.append([])
        if role == "assistant" and "tool_calls" in msg:
            for call in msg["tool_calls"]:
                assert set(call) == {"id", "type", "function"} and call["type"] == "function"
                assert isinstance(call["id"], str) and call["id"] and call["id"] not in open_calls
                assert isinstance(call["function"]["arguments"], str)  # a JSON string, as the API sends it
                open_calls[call["id"]] = call
                turns[-1].append({"name": call["function"]["name"], "arguments": json.loads(call["function"]["arguments"])})
        else:
            assert isinstance(msg["content"], str)
        if role == "tool":
            assert msg["tool_call_id"] in open_calls and msg["tool_call_id"] not in answered
            answered.add(msg["tool_call_id"])
    assert answered == set(open_calls)  # every call answered exactly once
    return turns


def expected_turns() -> list[list[dict]]:
    return [[{"name": c.name, "arguments": c.arguments} for c in turn] for turn in CALLS_BY_TURN]


def prompt_mode_calls(text: str) -> list[dict]:
    """An assistant answer of prompt mode read back as BFCL reads it: a Python list of keyword calls."""
    node = ast.parse(text, mode="eval").body
    assert isinstance(node, ast.List)
    out = []
    for call in node.elts:
        assert isinstance(call, ast.Call) and not call.args
        out.append({"name": call.func.id, "arguments": {k.arg: ast.literal_eval(k.value) for k in call.keywords}})
    return out


def check_prompt_mode(messages: list[dict]) -> list[list[dict]]:
    """Prompt mode: BFCL's system prompt, then text only, user and assistant alternating (tool
    outputs come back as a user message); return the calls of each user turn."""
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith("You are an expert in composing functions.")
    turns: list[list[dict]] = []
    for k, msg in enumerate(messages[1:]):
        assert set(msg) <= {"role", "content", "weight"} and isinstance(msg["content"], str)
        assert msg["role"] == ("user" if k % 2 == 0 else "assistant")
        if msg["role"] == "user" and not msg["content"].startswith("[{'role': 'tool'"):
            turns.append([])
        if msg["role"] == "assistant" and msg["content"].startswith("["):
            turns[-1].extend(prompt_mode_calls(msg["content"]))
    return turns


def test_openai_chat_jsonl(run_dir, tmp_path, capsys):
    out = tmp_path / "sft.jsonl"
    assert cli(["export", str(run_dir), "--format", "openai", "--mode", "fc", "--out", str(out)]) == 0
    assert f"wrote 4 trajectories to {out} in fc mode" in capsys.readouterr().out
    rows = read_jsonl(out)
    assert len(rows) == 4  # positives only by default
    for row in rows:
        assert set(row) == {"messages", "tools"}
        assert row["messages"][0] == {"role": "user", "content": F.QUERIES[0]}  # fc: no system message (BFCL FC sends none)
        assert check_openai_messages(row["messages"]) == expected_turns()
        assert [t["function"]["name"] for t in row["tools"]] == ["search_flights", "get_weather", "book_flight"]
        assert all(t["type"] == "function" and t["function"]["parameters"]["type"] == "object" for t in row["tools"])
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_openai_chat_in_prompt_mode_is_the_default(run_dir, tmp_path, capsys):
    out = tmp_path / "sft.jsonl"
    assert cli(["export", str(run_dir), "--format", "openai", "--out", str(out)]) == 0
    assert f"wrote 4 trajectories to {out} in prompt mode" in capsys.readouterr().out
    for row in read_jsonl(out):
        assert set(row) == {"messages"}  # the functions are in the system prompt, the calls are text
        assert check_prompt_mode(row["messages"]) == expected_turns()
        assert "'name': 'book_flight'" in row["messages"][0]["content"]


def test_openai_fc_rows_per_tools_epoch_weight_earlier_turns_zero(miss_run, tmp_path):
    export(miss_run, "openai", tmp_path / "fc.jsonl", mode="fc")
    first, second = read_jsonl(tmp_path / "fc.jsonl")
    assert [t["function"]["name"] for t in first["tools"]] == ["search_flights", "get_weather"]
    assert [t["function"]["name"] for t in second["tools"]] == ["search_flights", "get_weather", "book_flight"]
    unweighted = [{k: v for k, v in m.items() if k != "weight"} for m in second["messages"]]
    assert unweighted[:len(first["messages"])] == first["messages"]
    assert not any("weight" in m for m in first["messages"])
    weights = [m.get("weight", 1) for m in second["messages"] if m["role"] == "assistant"]
    assert weights == [0, 0, 0, 1, 1]  # epoch 0's turns are context here, trained in the first row
    assert second["messages"][len(first["messages"])] == {"role": "user", "content": F.MISS_FUNC_FOLLOW_UP}
    export(miss_run, "openai", tmp_path / "prompt.jsonl")
    (row,) = read_jsonl(tmp_path / "prompt.jsonl")
    assert "book_flight" not in row["messages"][0]["content"] and check_prompt_mode(row["messages"])[2][0]["name"] == "book_flight"


def test_polarity_filter(run_dir, tmp_path):
    assert export(run_dir, "openai", tmp_path / "all.jsonl", polarity="all")["written"] == 8
    assert export(run_dir, "openai", tmp_path / "neg.jsonl", polarity="negative", mode="fc")["written"] == 4
    booked = [json.loads(r["messages"][-3]["tool_calls"][0]["function"]["arguments"])["flight_id"] for r in read_jsonl(tmp_path / "neg.jsonl")]
    assert booked == ["UA99"] * 4


def test_openai_preference_pairs(run_dir, tmp_path):
    out = tmp_path / "dpo.jsonl"
    assert cli(["export", str(run_dir), "--format", "openai", "--mode", "fc", "--out", str(out), "--kind", "pairs"]) == 0
    rows = read_jsonl(out)
    assert len(rows) == 4
    for row in rows:
        assert set(row) == {"input", "preferred_output", "non_preferred_output"}
        prefix = row["input"]["messages"]
        assert [m["role"] for m in prefix][-1] == "user" and prefix[-1]["content"] == F.QUERIES[1]
        check_openai_messages(prefix)
        (good,), (bad,) = row["preferred_output"], row["non_preferred_output"]
        assert good["role"] == bad["role"] == "assistant"
        assert json.loads(good["tool_calls"][0]["function"]["arguments"])["flight_id"] == "UA12"
        assert json.loads(bad["tool_calls"][0]["function"]["arguments"])["flight_id"] == "UA99"
        assert len(row["input"]["tools"]) == 3
    export(run_dir, "openai", tmp_path / "prompt.jsonl", kind="pairs")
    for row in read_jsonl(tmp_path / "prompt.jsonl"):
        assert set(row["input"]) == {"messages"} and row["input"]["messages"][0]["role"] == "system"
        (good,), (bad,) = row["preferred_output"], row["non_preferred_output"]
        assert prompt_mode_calls(good["content"])[0]["arguments"]["flight_id"] == "UA12"
        assert prompt_mode_calls(bad["content"])[0]["arguments"]["flight_id"] == "UA99"


def test_sharegpt(run_dir, tmp_path):
    out = tmp_path / "sharegpt.json"
    export(run_dir, "sharegpt", out, mode="fc")
    rows = read_jsonl(out)
    assert len(rows) == 4
    for row in rows:
        turns = row["conversations"]
        assert turns[0] == {"from": "human", "value": F.QUERIES[0]}  # fc: no system turn
        # LLaMA-Factory's rule: human/observation and gpt/function_call alternate.
        for k, turn in enumerate(turns):
            assert turn["from"] in (("human", "observation") if k % 2 == 0 else ("gpt", "function_call")), turns
        calls = [json.loads(t["value"]) for t in turns if t["from"] == "function_call"]
        as_lists = [c if isinstance(c, list) else [c] for c in calls]
        assert as_lists == expected_turns()
        observations = [t["value"] for t in turns if t["from"] == "observation"]
        assert len(json.loads(observations[0])) == 2  # the two parallel answers, one observation
        assert [t["name"] for t in json.loads(row["tools"])] == ["search_flights", "get_weather", "book_flight"]

    export(run_dir, "sharegpt", tmp_path / "rank.json", kind="pairs", mode="fc")
    for row in read_jsonl(tmp_path / "rank.json"):
        assert row["conversations"][-1] == {"from": "human", "value": F.QUERIES[1]}
        assert row["chosen"]["from"] == row["rejected"]["from"] == "function_call"
        assert json.loads(row["chosen"]["value"])["arguments"]["flight_id"] == "UA12"
        assert json.loads(row["rejected"]["value"])["arguments"]["flight_id"] == "UA99"


def test_sharegpt_prompt_mode_and_fc_tool_changes(run_dir, miss_run, tmp_path):
    export(run_dir, "sharegpt", tmp_path / "p.json")
    for row in read_jsonl(tmp_path / "p.json"):
        assert set(row) == {"conversations"}
        turns = row["conversations"]
        assert turns[0]["from"] == "system" and turns[0]["value"].startswith("You are an expert in composing functions.")
        assert [t["from"] for t in turns[1:]] == ["human", "gpt"] * 4  # tool outputs come back as a human turn
        assert prompt_mode_calls(turns[2]["value"]) == expected_turns()[0]
    summary = export(miss_run, "sharegpt", tmp_path / "fc.json", mode="fc")
    assert summary["written"] == 0 and summary["skip_reasons"] == {"ShareGPT cannot change tools mid-conversation (use --mode prompt)": 1}
    assert export(miss_run, "sharegpt", tmp_path / "p2.json")["written"] == 1


def test_hf_jsonl_layout(run_dir, tmp_path):
    from engine.chat_templates import template_path

    out = tmp_path / "hf"
    summary = export(run_dir, "hf", out, mode="fc")
    assert summary["files"] == [str(out / "train.jsonl"), str(out / "chat_template.jinja")]
    assert (out / "chat_template.jinja").read_text() == template_path("smollm2_tools.jinja").read_text()
    assert "{%- generation %}" in (out / "chat_template.jinja").read_text()
    rows = read_jsonl(out / "train.jsonl")
    assert len(rows) == 4
    # One schema for every row and every message: what Arrow (datasets' json loader) needs.
    assert len({tuple(r) for r in rows}) == 1
    assert len({tuple(m) for r in rows for m in r["prompt"] + r["completion"]}) == 1
    assert all(isinstance(r["tools"], str) for r in rows)
    for r in rows:
        # TRL prompt-completion: the completion starts at the first assistant message
        assert [m["role"] for m in r["prompt"]] == ["user"] and r["completion"][0]["role"] == "assistant"
        check_openai_messages([{k: v for k, v in m.items() if v not in (None, [])} | {"content": m["content"] or ""}
                               for m in r["prompt"] + r["completion"]])

    export(run_dir, "hf", tmp_path / "hf_pairs", kind="pairs", mode="fc")
    pair = read_jsonl(tmp_path / "hf_pairs" / "train.jsonl")[0]
    assert {"prompt", "chosen", "rejected", "tools"} <= set(pair)
    # TRL's conversational preference rows: a shared prompt, one assistant message a side
    assert [m["role"] for m in pair["chosen"]] == [m["role"] for m in pair["rejected"]] == ["assistant"]
    assert pair["prompt"][-1] == {"role": "user", "content": F.QUERIES[1], "tool_calls": [], "tool_call_id": None, "name": None}
    assert json.loads(pair["chosen"][0]["tool_calls"][0]["function"]["arguments"])["flight_id"] == "UA12"

    export(run_dir, "hf", tmp_path / "hf_prompt", kind="pairs")
    pair = read_jsonl(tmp_path / "hf_prompt" / "train.jsonl")[0]
    assert set(pair) == {"id", "episode_id", "prompt", "chosen", "rejected"}  # prompt mode: no tools column
    assert pair["prompt"][0]["role"] == "system" and all(set(m) == {"role", "content"} for m in pair["prompt"])
    assert prompt_mode_calls(pair["rejected"][0]["content"])[0]["arguments"]["flight_id"] == "UA99"


def test_hf_fc_rows_per_tools_epoch(miss_run, tmp_path):
    export(miss_run, "hf", tmp_path / "hf", mode="fc")
    first, second = read_jsonl(tmp_path / "hf" / "train.jsonl")
    assert (first["segment"], second["segment"]) == (0, 1)
    assert [t["function"]["name"] for t in json.loads(first["tools"])] == ["search_flights", "get_weather"]
    assert len(json.loads(second["tools"])) == 3
    # segment 1's prompt is all of segment 0 plus BFCL's follow-up: earlier turns are context only
    assert second["prompt"] == first["prompt"] + first["completion"] + [
        {"role": "user", "content": F.MISS_FUNC_FOLLOW_UP, "tool_calls": [], "tool_call_id": None, "name": None}]
    assert second["completion"][0]["tool_calls"][0]["function"]["name"] == "book_flight"
    export(miss_run, "hf", tmp_path / "pairs", kind="pairs", mode="fc")
    late, early = read_jsonl(tmp_path / "pairs" / "train.jsonl")
    assert (len(json.loads(late["tools"])), len(json.loads(early["tools"]))) == (3, 2)  # the tools where the sides part


def test_hf_export_loads_with_datasets(run_dir, tmp_path):
    datasets = importlib.import_module("datasets")
    for kind, columns in [("trajectories", "completion"), ("pairs", "chosen")]:
        out = tmp_path / kind
        summary = export(run_dir, "hf", out, kind=kind, save_to_disk=True)
        assert summary["files"] == [str(out / "train.jsonl"), str(out / "chat_template.jinja"), str(out / "arrow")]
        loaded = datasets.load_dataset("json", data_files=str(out / "train.jsonl"), split="train", cache_dir=str(tmp_path / "cache"))
        saved = datasets.load_from_disk(str(out / "arrow"))
        assert len(loaded) == len(saved) == 4
        assert loaded[0][columns] == saved[0][columns] == read_jsonl(out / "train.jsonl")[0][columns]


def test_hf_save_to_disk_without_datasets_is_a_clear_error(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # what `import datasets` sees when it is not installed
    with pytest.raises(UserInputError, match=r"needs the `datasets` package: pip install datasets"):
        export(run_dir, "hf", tmp_path / "hf", save_to_disk=True)
    assert not (tmp_path / "hf").exists()  # refused before writing anything
    assert export(run_dir, "hf", tmp_path / "hf")["written"] == 4  # the JSONL layout alone needs nothing


def test_bfcl_prompt_and_ground_truth(run_dir, tmp_path, monkeypatch):
    out = tmp_path / "bfcl"
    assert cli(["export", str(run_dir), "--format", "bfcl", "--out", str(out)]) == 0
    prompts = read_jsonl(out / BFCL_FILE)
    truths = read_jsonl(out / "possible_answer" / BFCL_FILE)
    assert [p["id"] for p in prompts] == [t["id"] for t in truths] == [f"traj-{i}-positive" for i in range(4)]
    monkeypatch.setenv("BFCL_PROJECT_ROOT", str(tmp_path / "bfcl_root"))
    bfcl_utils = importlib.import_module("bfcl_eval.model_handler.utils")
    for prompt, truth in zip(prompts, truths):
        assert [[m["role"] for m in turn] for turn in prompt["question"]] == [["user"], ["user"]]  # BFCL adds its system prompt
        assert [turn[-1]["content"] for turn in prompt["question"]] == F.QUERIES
        search = prompt["function"][0]
        assert search["parameters"]["type"] == "dict" and search["parameters"]["properties"]["max_price"]["type"] == "float"
        assert search["response"]["type"] == "array"
        assert len(truth["ground_truth"]) == len(prompt["question"])
        for calls, strings in zip(expected_turns(), truth["ground_truth"]):
            parsed = []
            for s in strings:
                node = ast.parse(s, mode="eval").body
                assert isinstance(node, ast.Call) and not node.args  # keyword arguments only
                parsed.append({"name": node.func.id, "arguments": {k.arg: ast.literal_eval(k.value) for k in node.keywords}})
            assert parsed == calls
            # BFCL's own decoder reads them back to the same calls.
            assert bfcl_utils.default_decode_ast_prompting("[" + ", ".join(strings) + "]") == [{c["name"]: c["arguments"]} for c in calls]


def test_bfcl_miss_func_entry_renders_as_our_prompt_mode(miss_run, tmp_path, monkeypatch):
    """The exported entry, built into a conversation by the BFCL harness, gives the messages
    our prompt mode trains on (system prompt without the withheld function, BFCL's follow-up)."""
    monkeypatch.setenv("BFCL_PROJECT_ROOT", str(tmp_path / "bfcl_root"))
    from bench.bfcl.runner import Conversation
    from engine.records import Message
    from engine.render import conversation, decoded_call, render

    export(miss_run, "bfcl", tmp_path / "b")
    (entry,) = read_jsonl(tmp_path / "b" / BFCL_FILE)
    assert [d["name"] for d in entry["function"]] == ["search_flights", "get_weather"]
    assert [d["name"] for d in entry["missed_function"]["2"]] == ["book_flight"] and entry["question"][2] == []
    assert read_jsonl(tmp_path / "b" / "possible_answer" / BFCL_FILE)[0]["ground_truth"][1] == []
    traj = F.miss_func_trajectory(0)
    (rendered,) = render(traj, "prompt")
    answers = iter(m.content for m in rendered.messages if m.role == "assistant")
    convo, turn = Conversation(entry, "prompt"), 0
    messages = conversation(traj.messages)
    for k, msg in enumerate(messages):
        if msg.role == "user":
            convo.add_user(convo.turn_messages(turn))
            turn += 1
        elif msg.role == "assistant":
            convo.add_answer(Message(role="assistant", content=next(answers)))
            if msg.tool_calls:
                outputs = [m.content for m in messages[k + 1:k + 1 + len(msg.tool_calls)]]
                convo.add_results([decoded_call(c) for c in msg.tool_calls], outputs)
    assert convo.messages == rendered.messages


def test_bad_input_is_one_clear_line(run_dir, tmp_path, capsys):
    cases = [
        (["export", str(tmp_path / "nope"), "--format", "openai", "--out", str(tmp_path / "o.jsonl")], "is not a magnet run directory"),
        (["export", str(run_dir), "--format", "bfcl", "--out", str(tmp_path / "b"), "--kind", "pairs"], "BFCL has no preference pairs"),
        (["export", str(run_dir), "--format", "openai", "--out", str(tmp_path)], "is a folder"),
        (["export", str(run_dir), "--format", "openai", "--out", str(tmp_path / "p.jsonl"), "--kind", "pairs", "--polarity", "positive"],
         "drop --polarity"),
        (["export", str(run_dir), "--format", "sharegpt", "--out", str(tmp_path / "s.json"), "--save-to-disk"], "only applies to --format hf"),
        (["export", str(run_dir), "--format", "bfcl", "--out", str(tmp_path / "b"), "--mode", "fc"], "--mode does not apply to --format bfcl"),
    ]
    for argv, fragment in cases:
        assert cli(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("magnet export: error:") and fragment in err and "\n" not in err
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "b").exists()


def test_failed_export_leaves_no_partial_file(run_dir, tmp_path, monkeypatch):
    out = tmp_path / "sft.jsonl"
    out.write_text("previous export\n")
    import engine.export as ex

    calls = {"n": 0}

    def fails_on_third(traj, mode):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return ex.openai_chat(traj, mode)

    monkeypatch.setattr(ex, "openai_chat", fails_on_third)
    with pytest.raises(UserInputError, match=r"cannot write the export to .*sft\.jsonl \(No space left on device\)"):
        export(run_dir, "openai", out)
    assert out.read_text() == "previous export\n"
    assert sorted(os.listdir(tmp_path)) == ["run", "sft.jsonl"]


def test_export_reports_damaged_frames_and_keeps_going(run_dir, tmp_path, capsys):
    from engine.shards import FRAME_OVERHEAD, iter_frames, shard_files

    path = shard_files(run_dir / "trajectories")[0]
    second = [off for off, _ in iter_frames(path)][2]  # traj-1-positive
    with open(path, "r+b") as f:
        f.seek(second + FRAME_OVERHEAD + 20)
        f.write(b"\xde\xad")
    assert cli(["export", str(run_dir), "--format", "openai", "--out", str(tmp_path / "o.jsonl")]) == 0
    captured = capsys.readouterr()
    assert f"corrupted frame in {path} at byte {second}" in captured.err
    assert len(read_jsonl(tmp_path / "o.jsonl")) == 3
    assert orjson.loads((tmp_path / "o.jsonl").read_text().splitlines()[1])["messages"]


def test_records_a_format_cannot_express_are_skipped_and_counted(tmp_path, capsys):
    import msgspec

    from engine.records import Message, ToolCall

    run = tmp_path / "run"
    odd = F.trajectory(9)
    odd.messages[2] = Message(role="assistant", tool_calls=[ToolCall(name="search", arguments={"max-price": 3}, id="c1")])
    same = F.pair(8)
    same = msgspec.structs.replace(same, rejected=msgspec.structs.replace(same.rejected, messages=same.chosen.messages))
    with RunStore.open(run, config_fingerprint="skip-test") as store:
        store.put("trajectories", F.trajectory(1))
        store.put("trajectories", odd)
        store.put("pairs", F.pair(1))
        store.put("pairs", same)
    assert cli(["export", str(run), "--format", "bfcl", "--out", str(tmp_path / "b")]) == 0
    assert "wrote 1 trajectories" in (out := capsys.readouterr().out) and "skipped 1 (1 call not writable as Python)" in out
    assert [r["id"] for r in read_jsonl(tmp_path / "b" / "possible_answer" / BFCL_FILE)] == ["traj-1-positive"]
    summary = export(run, "openai", tmp_path / "p.jsonl", kind="pairs")
    assert (summary["written"], summary["skip_reasons"]) == (1, {"sides do not differ at an assistant turn": 1})
    # prompt mode cannot write the odd call as Python text; fc mode carries it as a native tool call
    assert export(run, "openai", tmp_path / "t.jsonl")["skip_reasons"] == {"call not writable as Python": 1}
    assert export(run, "openai", tmp_path / "t.jsonl", mode="fc")["written"] == 2
