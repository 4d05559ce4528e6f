"""Rendering and masks: token by token, template refusal, truncation by whole turns, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from train_support import single_turn_pairs, tiny  # noqa: F401

from engine.errors import UserInputError
from engine.records import Message
from engine.store import RunStore
from train.data import ChatRenderer, TemplateError, pair_examples, read_run, require_examples, sft_examples
from train.loop import load_tokenizer
from train.samples import pairs, trajectories, trajectory


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


def test_mask_token_by_token(tiny):  # noqa: F811
    tok = load_tokenizer(tiny)
    traj = trajectory(0, turns=3)
    traj.hints = ["SECRET-HINT use get_weather"]
    ex = ChatRenderer(tok, source="tiny", max_length=4096).encode_trajectory(traj)
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
    assert "SECRET-HINT" not in tok.decode(ex.input_ids.tolist())
    # the tool call was rendered through the template's tool_calls support
    first = tok.decode(ex.input_ids[ex.turn == 0].tolist())
    assert first.startswith("<tool_call>") and '"name": "get_weather"' in first and '"city"' in first


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
    full = ChatRenderer(tok, source="t", max_length=8192).encode_trajectory(traj)
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
