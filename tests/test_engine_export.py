"""`magnet export`: every format from a real run directory, checked structurally."""

from __future__ import annotations

import ast
import importlib
import json
import os
import sys

import orjson
import pytest

import _records_factory as F
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


def test_openai_chat_jsonl(run_dir, tmp_path, capsys):
    out = tmp_path / "sft.jsonl"
    assert cli(["export", str(run_dir), "--format", "openai", "--out", str(out)]) == 0
    assert f"wrote 4 trajectories to {out}" in capsys.readouterr().out
    rows = read_jsonl(out)
    assert len(rows) == 4  # positives only by default
    for row in rows:
        assert set(row) == {"messages", "tools"}
        assert check_openai_messages(row["messages"]) == expected_turns()
        assert [t["function"]["name"] for t in row["tools"]] == ["search_flights", "get_weather", "book_flight"]
        assert all(t["type"] == "function" and t["function"]["parameters"]["type"] == "object" for t in row["tools"])
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_polarity_filter(run_dir, tmp_path):
    assert export(run_dir, "openai", tmp_path / "all.jsonl", polarity="all")["written"] == 8
    assert export(run_dir, "openai", tmp_path / "neg.jsonl", polarity="negative")["written"] == 4
    booked = [json.loads(r["messages"][-3]["tool_calls"][0]["function"]["arguments"])["flight_id"] for r in read_jsonl(tmp_path / "neg.jsonl")]
    assert booked == ["UA99"] * 4


def test_openai_preference_pairs(run_dir, tmp_path):
    out = tmp_path / "dpo.jsonl"
    assert cli(["export", str(run_dir), "--format", "openai", "--out", str(out), "--kind", "pairs"]) == 0
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


def test_sharegpt(run_dir, tmp_path):
    out = tmp_path / "sharegpt.json"
    export(run_dir, "sharegpt", out)
    rows = read_jsonl(out)
    assert len(rows) == 4
    for row in rows:
        turns = row["conversations"]
        assert turns[0] == {"from": "system", "value": "You are a travel assistant."}
        # LLaMA-Factory's rule: after the system turn, human/observation and gpt/function_call alternate.
        for k, turn in enumerate(turns[1:]):
            assert turn["from"] in (("human", "observation") if k % 2 == 0 else ("gpt", "function_call")), turns
        calls = [json.loads(t["value"]) for t in turns if t["from"] == "function_call"]
        as_lists = [c if isinstance(c, list) else [c] for c in calls]
        assert as_lists == expected_turns()
        observations = [t["value"] for t in turns if t["from"] == "observation"]
        assert len(json.loads(observations[0])) == 2  # the two parallel answers, one observation
        assert [t["name"] for t in json.loads(row["tools"])] == ["search_flights", "get_weather", "book_flight"]

    export(run_dir, "sharegpt", tmp_path / "rank.json", kind="pairs")
    for row in read_jsonl(tmp_path / "rank.json"):
        assert row["conversations"][-1] == {"from": "human", "value": F.QUERIES[1]}
        assert row["chosen"]["from"] == row["rejected"]["from"] == "function_call"
        assert json.loads(row["chosen"]["value"])["arguments"]["flight_id"] == "UA12"
        assert json.loads(row["rejected"]["value"])["arguments"]["flight_id"] == "UA99"


def test_hf_jsonl_layout(run_dir, tmp_path):
    out = tmp_path / "hf"
    summary = export(run_dir, "hf", out)
    assert summary["files"] == [str(out / "train.jsonl")]
    rows = read_jsonl(out / "train.jsonl")
    assert len(rows) == 4
    # One schema for every row and every message: what Arrow (datasets' json loader) needs.
    assert len({tuple(r) for r in rows}) == 1
    assert len({tuple(m) for r in rows for m in r["messages"]}) == 1
    assert all(isinstance(r["tools"], str) for r in rows)
    for r in rows:
        check_openai_messages([{k: v for k, v in m.items() if v not in (None, [])} | {"content": m["content"] or ""} for m in r["messages"]])

    export(run_dir, "hf", tmp_path / "hf_pairs", kind="pairs")
    pair = read_jsonl(tmp_path / "hf_pairs" / "train.jsonl")[0]
    assert {"prompt", "chosen", "rejected", "tools"} <= set(pair)
    assert pair["chosen"][0]["role"] == pair["rejected"][0]["role"] == "assistant"
    assert pair["chosen"][-1]["content"] == "Done with step 2."


def test_hf_export_loads_with_datasets(run_dir, tmp_path):
    datasets = importlib.import_module("datasets")
    for kind, columns in [("trajectories", "messages"), ("pairs", "chosen")]:
        out = tmp_path / kind
        summary = export(run_dir, "hf", out, kind=kind, save_to_disk=True)
        assert summary["files"] == [str(out / "train.jsonl"), str(out / "arrow")]
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
        assert [[m["role"] for m in turn] for turn in prompt["question"]] == [["system", "user"], ["user"]]
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


def test_bad_input_is_one_clear_line(run_dir, tmp_path, capsys):
    cases = [
        (["export", str(tmp_path / "nope"), "--format", "openai", "--out", str(tmp_path / "o.jsonl")], "is not a magnet run directory"),
        (["export", str(run_dir), "--format", "bfcl", "--out", str(tmp_path / "b"), "--kind", "pairs"], "BFCL has no preference pairs"),
        (["export", str(run_dir), "--format", "openai", "--out", str(tmp_path)], "is a folder"),
        (["export", str(run_dir), "--format", "openai", "--out", str(tmp_path / "p.jsonl"), "--kind", "pairs", "--polarity", "positive"], "drop --polarity"),
        (["export", str(run_dir), "--format", "sharegpt", "--out", str(tmp_path / "s.json"), "--save-to-disk"], "only applies to --format hf"),
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

    def fails_on_third(traj):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return ex.openai_chat(traj)

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
    assert "wrote 1 trajectories" in (out := capsys.readouterr().out) and "skipped 1 (BFCL cannot name their calls)" in out
    assert [r["id"] for r in read_jsonl(tmp_path / "b" / "possible_answer" / BFCL_FILE)] == ["traj-1-positive"]
    summary = export(run, "openai", tmp_path / "p.jsonl", kind="pairs")
    assert (summary["written"], summary["skipped"]) == (1, 1)
