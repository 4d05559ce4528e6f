"""Rendering and masks in both modes: token by token, fc segments per tools epoch, the template's
generation markers, template refusal, truncation by whole turns, bad input."""

from __future__ import annotations

import _records_factory as F
import numpy as np
import pytest
from train_support import single_turn_pairs, tiny  # noqa: F401

from engine.errors import UserInputError
from engine.records import Message
from engine.store import RunStore
from train.data import ChatRenderer, TemplateError, pair_examples, read_run, require_examples, sft_examples, template_messages
from train.loop import load_tokenizer
from train.samples import SYSTEM, pairs, trajectories, trajectory


def _roles_by_token(tok, ids) -> list[str]:
    """Independent reading of a ChatML token stream: the role owning each token. The header
    (<|im_start|>role\\n) and the newline after <|im_end|> belong to no message ("glue")."""
    start, end = tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")
    owner, role, header = [], None, None
    for i in ids:
        if i == start:
            owner.append("glue")
            role, header = None, ""
        elif header is not None:
            owner.append("glue")
            header += tok.decode([i])
            if "\n" in header:
                assert header.endswith("\n"), header  # the header newline is its own token
                role, header = header.strip(), None
        elif i == end:
            owner.append(role or "glue")
            role = None
        else:
            owner.append(role or "glue")
    return owner


@pytest.mark.parametrize("mode", ["prompt", "fc"])
def test_mask_token_by_token(tiny, mode):  # noqa: F811
    tok = load_tokenizer(tiny)
    traj = trajectory(0, turns=3)
    traj.hints = ["SECRET-HINT use get_weather"]
    (ex,) = ChatRenderer(tok, source="tiny", max_length=4096, mode=mode).encode_trajectory(traj)
    owner = _roles_by_token(tok, ex.input_ids.tolist())
    assert set(owner) == {"glue", "system", "user", "assistant"}  # tool outputs live in user blocks
    trained = ex.turn >= 0
    for t, who in enumerate(owner):
        assert trained[t] == (who == "assistant"), (t, who, tok.decode([int(ex.input_ids[t])]))
    end = tok.convert_tokens_to_ids("<|im_end|>")
    n_assistant = sum(m.role == "assistant" for m in traj.messages)
    assert ex.n_turns == n_assistant == 6
    # each turn is one contiguous span ending in its end-of-turn token, numbered in order
    for h in range(ex.n_turns):
        where = np.nonzero(ex.turn == h)[0]
        assert np.array_equal(where, np.arange(where[0], where[-1] + 1))
        assert ex.input_ids[where[-1]] == end
    text = tok.decode(ex.input_ids.tolist())
    assert "SECRET-HINT" not in text
    assert SYSTEM not in text  # the record's own system message gives way to the mode's
    first = tok.decode(ex.input_ids[ex.turn == 0].tolist())
    if mode == "fc":  # the tool call was rendered through the template's tool_calls support
        assert first.startswith("<tool_call>") and '"name": "get_weather"' in first and '"city"' in first
        assert "<tools>" in text and "You are an expert in composing functions" not in text
    else:  # BFCL's system prompt, the call as Python text, its output as BFCL's user message
        assert first.startswith("[get_weather(city='") and first.endswith(")]<|im_end|>")
        assert text.count("You are an expert in composing functions") == 1 and "<tools>" not in text
        assert "[{'role': 'tool', 'name': \"get_weather(city=" in text


def test_fc_segments_train_only_their_tools_epoch(tiny):  # noqa: F811
    tok = load_tokenizer(tiny)
    traj = F.miss_func_trajectory()
    (whole,) = ChatRenderer(tok, source="t", max_length=8192, mode="prompt").encode_trajectory(traj)
    assert whole.n_turns == 5 and whole.id == traj.id
    first, second = ChatRenderer(tok, source="t", max_length=8192, mode="fc").encode_trajectory(traj)
    assert (first.id, second.id) == (traj.id, f"{traj.id}#1") and (first.n_turns, second.n_turns) == (3, 2)
    head, tail = tok.decode(first.input_ids.tolist()), tok.decode(second.input_ids.tolist())
    assert '"name": "book_flight"' not in head.split("\n</tools>")[0] and '"name": "book_flight"' in tail.split("\n</tools>")[0]
    # segment 1 holds the whole conversation, but trains exactly its last two assistant blocks
    owner = _roles_by_token(tok, second.input_ids.tolist())
    blocks = [np.nonzero((second.turn == h))[0] for h in range(2)]
    assistant_starts = [t for t in range(1, len(owner)) if owner[t] == "assistant" and owner[t - 1] != "assistant"]
    assert len(assistant_starts) == 5 and [b[0] for b in blocks] == assistant_starts[3:]
    assert all(owner[t] == "assistant" for b in blocks for t in b)
    assert tok.decode(second.input_ids[blocks[0]].tolist()).startswith('<tool_call>\n{"name": "book_flight"')


@pytest.mark.parametrize("mode", ["prompt", "fc"])
def test_mask_equals_the_template_generation_markers(mode):
    """Our prefix-rendered mask and the {% generation %} mask TRL trains with agree token for token
    (SmolLM2's tokenizer and our shipped template)."""
    from transformers import AutoTokenizer

    from engine.models import smollm2_checkpoint
    from engine.render import render

    tok = AutoTokenizer.from_pretrained(smollm2_checkpoint())
    renderer = ChatRenderer(tok, source="smollm2", max_length=8192, mode=mode)
    for traj in (F.miss_func_trajectory(), trajectory(1, turns=2)):
        for seg, ex in zip(render(traj, mode), renderer.encode_trajectory(traj)):
            tools = [t.to_openai_tool() for t in seg.tools] or None
            marked = tok.apply_chat_template(template_messages(seg.messages), tools=tools, return_dict=True,
                                             return_assistant_tokens_mask=True)
            assert marked["input_ids"] == ex.input_ids.tolist()
            ours, theirs = ex.turn >= 0, np.asarray(marked["assistant_masks"], dtype=bool)
            if all(t for m, t in zip(seg.messages, seg.trained) if m.role == "assistant"):
                assert np.array_equal(ours, theirs)
            else:  # a later fc segment: its context turns are generation-marked but not trained
                assert (ours <= theirs).all() and ours.sum() < theirs.sum()


def test_pairs_train_on_the_segment_where_they_part(tiny):  # noqa: F811
    tok = load_tokenizer(tiny)
    late, early = F.miss_func_pair(0), F.miss_func_pair(1, part_first=True)
    prs, report = pair_examples([late, early], ChatRenderer(tok, source="t", max_length=8192, mode="fc"))
    assert [p.id for p in prs] == [late.id, early.id] and report.truncated == 1  # early: epoch 1 left out
    assert (prs[0].chosen.n_turns, prs[1].chosen.n_turns) == (2, 3)
    assert '"name": "book_flight"' in tok.decode(prs[0].rejected.input_ids.tolist()).split("\n</tools>")[0]
    assert "book_flight" not in tok.decode(prs[1].chosen.input_ids.tolist())
    prs, report = pair_examples([late, early], ChatRenderer(tok, source="t", max_length=8192, mode="prompt"))
    assert [p.chosen.n_turns for p in prs] == [5, 5] and report.truncated == 0


UNSTABLE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n"
            "{% if m.role == 'assistant' and not loop.last %}[earlier reply]{% else %}{{ m.content }}{% endif %}"
            "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_template_that_rewrites_earlier_turns_is_refused(tiny):  # noqa: F811
    tok = load_tokenizer(tiny)
    tok.chat_template = UNSTABLE
    with pytest.raises(TemplateError, match="token prefix.*--chat-template"):
        ChatRenderer(tok, source="mymodel", max_length=4096).encode_trajectory(trajectory(0, turns=2))


def test_model_without_chat_template(tiny):  # noqa: F811
    tok = load_tokenizer(tiny)
    tok.chat_template = None
    with pytest.raises(UserInputError, match="mymodel has no chat template; pass --chat-template"):
        ChatRenderer(tok, source="mymodel", max_length=4096)


def test_truncation_drops_whole_turns_or_skips(tiny):  # noqa: F811
    tok = load_tokenizer(tiny)
    traj = trajectory(0, turns=3)
    (full,) = ChatRenderer(tok, source="t", max_length=8192).encode_trajectory(traj)
    spans = [np.nonzero(full.turn == h)[0] for h in range(full.n_turns)]
    limit = int(spans[2][-1]) + 5  # room for turns 0..2 and a little of what follows, not turn 3
    ex, report = sft_examples([traj], ChatRenderer(tok, source="t", max_length=limit))
    (kept,) = ex
    assert kept.n_turns == 3 and len(kept) == spans[2][-1] + 1 and report.truncated == 1
    assert np.array_equal(kept.input_ids, full.input_ids[:len(kept)]) and np.array_equal(kept.turn, full.turn[:len(kept)])
    ex, report = sft_examples([traj], ChatRenderer(tok, source="t", max_length=limit, truncation="skip"))
    assert ex == [] and report.skipped["too_long"] == 1
    ex, report = sft_examples([traj], ChatRenderer(tok, source="t", max_length=int(spans[0][-1])))  # not even turn 0
    assert ex == [] and report.skipped["too_long"] == 1 and "1 too_long" in report.summary()
    # a pair is never truncated: one side too long skips the pair
    prs, report = pair_examples(pairs(1, turns=3), ChatRenderer(tok, source="t", max_length=limit))
    assert prs == [] and report.skipped["too_long"] == 1


def test_pairs_from_different_episodes_are_skipped_and_counted(tiny):  # noqa: F811
    tok = load_tokenizer(tiny)
    good = single_turn_pairs(3)
    bad = single_turn_pairs(4)[3]
    bad.rejected.episode_id = "another-episode"
    prs, report = pair_examples(good + [bad], ChatRenderer(tok, source="t", max_length=4096))
    assert [p.id for p in prs] == ["p0", "p1", "p2"] and report.skipped == {"episode_mismatch": 1}
    _, report = pair_examples([bad], ChatRenderer(tok, source="t", max_length=4096))
    with pytest.raises(UserInputError, match="no usable preference pairs.*1 episode_mismatch"):
        require_examples([], report, "preference pairs", "run/pairs")


def test_reads_the_shard_store_and_filters_polarity(tiny, tmp_path):  # noqa: F811
    tok = load_tokenizer(tiny)
    run = tmp_path / "run"
    with RunStore.open(run, config_fingerprint="t") as store:
        for t in trajectories(3, turns=1):
            store.put("trajectories", t)
        store.put("trajectories", trajectory(9, turns=1, polarity="negative", wrong_turn=0))
        store.put("trajectories", trajectory(10, turns=1).__class__(
            id="empty", episode_id="e", polarity="positive", tools=[], teacher="t",
            messages=[Message(role="user", content="hi")]))
    ex, report = sft_examples(read_run(run, "trajectories"), ChatRenderer(tok, source="t", max_length=4096))
    assert len(ex) == 3 and report.seen == 5
    assert report.skipped == {"polarity_negative": 1, "no_assistant_turn": 1}


def test_empty_run_and_missing_dir_are_clear_errors(tiny, tmp_path, capsys):  # noqa: F811
    from engine.cli import main

    run = tmp_path / "empty"
    RunStore.open(run, config_fingerprint="t").close()
    rc = main(["train", "sft", "--data", str(run), "--model", str(tiny), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "no usable trajectories" in err and "magnet generate" in err
    rc = main(["train", "mdpo", "--data", str(tmp_path / "nope"), "--model", str(tiny), "--out", str(tmp_path / "o")])
    assert rc == 2 and "no such run directory" in capsys.readouterr().err


def test_run_sft_trains_in_the_configured_mode(tiny, tmp_path):  # noqa: F811
    """The mode reaches training from the config: default prompt (one example per trajectory),
    fc gives the miss_func trajectory one example per tools epoch; the summary names the mode."""
    from train.sft import run_sft
    from train.sft_config import SFTConfig

    fingerprints = set()
    for mode, steps in [(None, 1), ("fc", 2)]:  # one example per step: batch 1, one epoch
        cfg = SFTConfig(batch_size=1, micro_batch_size=1, max_length=4096, device="cpu", **({"mode": mode} if mode else {}))
        summary = run_sft(cfg, data=tmp_path, model=tiny, out=tmp_path / f"out-{mode}", records=[F.miss_func_trajectory()])
        assert summary["config"]["mode"] == (mode or "prompt") and summary["data"]["used"] == 1
        assert summary["steps"] == steps
        fingerprints.add(summary["data_fingerprint"])
    assert len(fingerprints) == 2
