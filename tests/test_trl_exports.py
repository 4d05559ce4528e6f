"""`magnet export --format hf` is data TRL trains on as is: SFTTrainer with assistant_only_loss and
DPOTrainer run on the export (a tiny random model with SmolLM2's tokenizer and the exported
template), and TRL's loss mask is exactly our trainer's mask for the same records."""

from __future__ import annotations

import math

import _records_factory as F
import numpy as np
import pytest

from engine.export import export
from engine.store import RunStore
from train.data import ChatRenderer


@pytest.fixture(scope="module")
def records():
    trajectories = [F.trajectory(i, with_ids=i % 2 == 0) for i in range(3)] + [F.miss_func_trajectory(0)]
    pairs = [F.pair(i) for i in range(3)] + [F.miss_func_pair(0), F.miss_func_pair(1, part_first=True)]
    return trajectories, pairs


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, records):
    run = tmp_path_factory.mktemp("trl") / "run"
    trajectories, pairs = records
    with RunStore.open(run, config_fingerprint="trl-test") as store:
        for t in trajectories:
            store.put("trajectories", t)
        for p in pairs:
            store.put("pairs", p)
    return run


@pytest.fixture(scope="module")
def tiny_smol(tmp_path_factory):
    """A random 2-layer Qwen2 with SmolLM2's 49k-token tokenizer and our shipped template."""
    from transformers import AutoTokenizer

    from engine.models import smollm2_checkpoint, tools_template
    from train.tiny_model import build_random_model

    tok = AutoTokenizer.from_pretrained(smollm2_checkpoint())
    return build_random_model(tmp_path_factory.mktemp("smol") / "model", tokenizer=tok, chat_template=tools_template())


def _tokenizer(model_dir, export_dir):
    """The model's tokenizer with the template the export ships beside train.jsonl."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = (export_dir / "chat_template.jinja").read_text()
    return tok


def _dataset(export_dir, tmp_path):
    import datasets

    return datasets.load_dataset("json", data_files=str(export_dir / "train.jsonl"), split="train",
                                 cache_dir=str(tmp_path / "hf_cache"))


@pytest.mark.parametrize("mode", ["prompt", "fc"])
def test_sft_trainer_assistant_only_loss_on_the_export(mode, run_dir, records, tiny_smol, tmp_path):
    from trl import SFTConfig, SFTTrainer
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    out = tmp_path / "hf"
    export(run_dir, "hf", out, mode=mode)
    tok = _tokenizer(tiny_smol, out)
    assert has_generation_markers(tok.chat_template) and is_chat_template_stop_token_trained(tok)
    data = _dataset(out, tmp_path)
    assert len(data) == 4 + (mode == "fc")  # fc: the miss_func trajectory is one row per tools epoch
    args = SFTConfig(output_dir=str(tmp_path / "sft"), assistant_only_loss=True, max_steps=2, per_device_train_batch_size=1,
                     max_length=4096, learning_rate=1e-3, logging_steps=1, save_strategy="no", use_cpu=True,
                     report_to="none", seed=0)
    trainer = SFTTrainer(model=str(tiny_smol), args=args, train_dataset=data, processing_class=tok)
    # TRL's labels are our trainer's assistant-only mask, token for token, segment for segment
    renderer = ChatRenderer(tok, source="smol", max_length=4096, mode=mode)
    ours = {ex.id: ex for t in records[0] for ex in renderer.encode_trajectory(t)}
    assert len(ours) == len(trainer.train_dataset)
    for raw, row in zip(data, trainer.train_dataset):
        ex = ours[f"{raw['id']}#{raw['segment']}" if raw["segment"] else raw["id"]]
        assert row["input_ids"] == ex.input_ids.tolist(), ex.id
        assert np.array_equal(np.asarray(row["labels"]) != -100, ex.turn >= 0), ex.id
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses)


@pytest.mark.parametrize("mode", ["prompt", "fc"])
def test_dpo_trainer_on_the_exported_pairs(mode, run_dir, tiny_smol, tmp_path):
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from engine.render import render_pair

    out = tmp_path / "hf"
    export(run_dir, "hf", out, kind="pairs", mode=mode)
    tok = _tokenizer(tiny_smol, out)
    data = _dataset(out, tmp_path)
    assert len(data) == 5
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=2, per_device_train_batch_size=1, max_length=4096,
                     learning_rate=1e-3, logging_steps=1, save_strategy="no", use_cpu=True, report_to="none", seed=0)
    model, ref = (AutoModelForCausalLM.from_pretrained(tiny_smol) for _ in range(2))
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tok)
    # each side's completion is exactly its first differing assistant message and its end of turn
    pair = F.miss_func_pair(0)
    cut = render_pair(pair, mode)
    row = next(r for r, raw in zip(trainer.train_dataset, data) if raw["id"] == pair.id)
    chosen, rejected = tok.decode(row["chosen_ids"]), tok.decode(row["rejected_ids"])
    assert chosen.endswith("<|im_end|>\n") and rejected.endswith("<|im_end|>\n") and "<|im_start|>" not in chosen + rejected
    if mode == "prompt":
        assert chosen == cut.chosen.content + "<|im_end|>\n"
    assert "UA12" in chosen and "UA99" in rejected and "book_flight" in chosen
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and abs(losses[0] - math.log(2)) < 1e-3  # the policy starts as the reference
