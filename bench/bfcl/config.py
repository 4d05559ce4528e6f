"""Every option of `magnet eval bfcl`, one typed struct: its flags and --config TOML are made from the fields."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from engine.config_cli import doc


class BfclConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The model under test, the slice of BFCL it is asked, and how it is run."""

    model: Annotated[str, doc("teacher spec (sim, openai:MODEL@URL, vllm:MODEL_OR_DIR, hf:DIR, a .toml) or 'replay'")]
    categories: Annotated[list[str], doc("categories or collections (all, multi_turn, single_turn, live, non_live, ast)")] = (
        msgspec.field(default_factory=lambda: ["all"]))
    bfcl_version: Annotated[Literal["v3", "v4"], doc("v3: the paper's BFCL-v3 (bfcl-eval 2025.6.8); v4: current release")] = "v3"
    bfcl_data: Annotated[str | None, doc("folder with BFCL_<version>_*.json files (default: the installed bfcl-eval's data)")] = None
    mode: Annotated[Literal["prompt", "fc"], doc("prompt: calls as Python text; fc: native tool calls")] = "prompt"
    out: Annotated[str, doc("run folder: result/ (BFCL's format), score/, report.json, report.md")]
    limit: Annotated[int | None, doc("only the first N entries of each category")] = None
    category_limits: Annotated[dict[str, int], doc(
        "first N entries of one category, over --limit (e.g. --category-limit multi_turn_base=5: long prompts are slow on CPU)")] = {}
    concurrency: Annotated[int, doc("entries in flight at once", ge=1)] = 16
    max_tokens: Annotated[int, doc("max tokens per model answer", ge=1)] = 1024
    temperature: Annotated[float, doc("sampling temperature")] = 0.0
    timeout_s: Annotated[float | None, doc(
        "seconds one model answer may take (default: the teacher's; 600 for vllm:/hf:, long BFCL prompts on CPU are slow)")] = None
    teacher_options: Annotated[dict[str, Any], doc("backend options passed to the teacher (vllm/hf), e.g. max_model_len=8192")] = {}
