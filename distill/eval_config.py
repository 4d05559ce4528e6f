"""Every knob of `magnet eval paths`, as two typed structs: what the test set is, and how a model is run on it.

``TestsetSpec`` decides the episodes (which toolkits, which path kinds, how many, which seeds,
which author): it is stored in the test set's manifest, and a later run that reuses the test set
takes it from there. ``EvalPathsConfig`` adds the model under test, its sampling and where it runs (--ray).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from engine.config_cli import doc
from engine.errors import UserInputError
from engine.ray_leases import RayActors, RayAddress, RayBlock, RayGpus

# Test-set paths are drawn from seeds offset by this, so they never share a random stream with
# training paths (`magnet generate` seeds are small integers). Recorded in the test set manifest.
TESTSET_SEED_OFFSET = 1_000_000

# The strata a report is broken down by, in report order: BFCL's single-turn kinds, the multi-turn
# variants (graph.paths.path_variant) and irrelevance.
STRATA: tuple[str, ...] = ("single", "parallel", "multiple", "parallel_multiple", "multi_turn.base", "multi_turn.nested",
                           "multi_turn.long", "multi_turn.miss_func", "multi_turn.miss_param", "irrelevance")


class TestsetSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What the held-out episodes are; the test set folder's fingerprint."""

    toolkits: Annotated[list[str], doc(
        "toolkits to pool: builtin (every built-in domain), a built-in toolkit name, bfcl (BFCL's eight multi-turn "
        "API classes), a .py module of tool classes, or a .json file of OpenAI tool specs (execution simulated)")] = msgspec.field(
        default_factory=lambda: ["builtin"])
    author: Annotated[str, doc("teacher spec that writes the episodes' queries and reference calls "
                               "(sim, openai:MODEL@URL, vllm:MODEL, hf:DIR)")] = "sim"
    kinds: Annotated[list[str], doc("strata to test: " + ", ".join(STRATA))] = msgspec.field(
        default_factory=lambda: list(STRATA))
    per_kind: Annotated[int, doc("episodes wanted per stratum")] = 10
    seed: Annotated[int, doc(f"test-set seed; paths are drawn with seed {TESTSET_SEED_OFFSET:,} + this, disjoint from training seeds")] = 0
    draw_factor: Annotated[float, doc("at most this many paths drawn per episode wanted (paths the author fails to translate are replaced)")] = 8.0
    path_options: Annotated[dict[str, Any], doc("extra fields of graph.paths_config.PathConfig (walk length, distractors, ...)")] = {}
    translate_attempts: Annotated[int, doc("author tries per translation step before the path is dropped")] = 3
    structured_outputs: Annotated[bool, doc("ask the author for JSON with response_format json_schema")] = True
    author_max_tokens: Annotated[int, doc("completion token limit of one author answer")] = 512

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in STRATA]
        if unknown:
            raise UserInputError(f"--kinds: unknown kind {unknown[0]!r}; choose from {', '.join(STRATA)}")
        if not self.kinds:
            raise UserInputError("--kinds is empty; name at least one of " + ", ".join(STRATA))
        if self.per_kind < 1:
            raise UserInputError(f"--per-kind must be >= 1, got {self.per_kind}")
        if self.draw_factor < 1:
            raise UserInputError(f"--draw-factor must be >= 1 (paths drawn per episode wanted), got {self.draw_factor}")
        if self.translate_attempts < 1 or self.author_max_tokens < 1:
            raise UserInputError("--translate-attempts and --author-max-tokens must be >= 1")
        if not self.toolkits:
            raise UserInputError("--toolkits is empty; name builtin, a toolkit, bfcl, a .py module or a .json spec file")

    @property
    def path_seed(self) -> int:
        return TESTSET_SEED_OFFSET + self.seed


class EvalPathsConfig(TestsetSpec, kw_only=True, forbid_unknown_fields=True):
    """A test set plus the model under test and how it is run."""

    out: Annotated[str, doc("run folder of the evaluation: per-episode results, report.md, report.json; rerunning resumes it")] = ""
    testset: Annotated[str, doc("test set folder, authored once and reused across models; empty = OUT/testset")] = ""
    model: Annotated[str, doc("model under test: a teacher spec (openai:MODEL@URL, vllm:MODEL_OR_DIR, hf:DIR, sim[:SCRIPT]) or replay (answers with "
                              "the references)")] = ""
    mode: Annotated[Literal["prompt", "fc"], doc(
        "prompt = BFCL's system prompt listing the functions, calls written as Python text (the paper's, as "
        "training uses it); fc = the tools block and native tool calls")] = "prompt"
    concurrency: Annotated[int, doc("episodes in flight at once (with --ray: per actor)")] = 16
    ray: RayAddress = ""
    ray_actors: RayActors = 0
    ray_block: RayBlock = 8
    ray_gpus: RayGpus = 0.0
    max_tokens: Annotated[int, doc("completion token limit of one model answer")] = 512
    temperature: Annotated[float, doc("sampling temperature of the model under test")] = 0.0
    max_steps_per_turn: Annotated[int, doc("assistant messages allowed per user turn, the final text included")] = 6
    answer_retries: Annotated[int, doc("re-asks of an answer that cannot be parsed (0 = an unparsable answer fails the episode, as in BFCL)")] = 0
    teacher_options: Annotated[dict[str, Any], doc("TeacherConfig fields or backend options for the model and the author (timeout_s, max_model_len, "
                                                   "...)")] = {}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.out:
            raise UserInputError("--out is required: the evaluation folder to write (or resume)")
        if not self.model:
            raise UserInputError("--model is required: the model under test (a teacher spec, or replay)")
        for name in ("concurrency", "max_tokens", "max_steps_per_turn"):
            if getattr(self, name) < 1:
                raise UserInputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.answer_retries < 0:
            raise UserInputError(f"--answer-retries must be >= 0, got {self.answer_retries}")

    def testset_spec(self) -> TestsetSpec:
        return TestsetSpec(**{f: getattr(self, f) for f in TestsetSpec.__struct_fields__})

    def run_fields(self) -> dict[str, Any]:
        """What decides the evaluation's results (with the test set's fingerprint): not where or how fast."""
        return {f: getattr(self, f) for f in ("model", "mode", "max_tokens", "temperature", "max_steps_per_turn", "answer_retries")}
