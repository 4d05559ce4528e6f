"""Every knob of `magnet generate`, one typed struct: CLI flags and the --config TOML fill it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from engine.config_cli import doc
from engine.errors import UserInputError
from engine.ray_leases import RAY_FIELDS, RayActors, RayAddress, RayBlock, RayGpus

# Phrases that, at the end of a turn, mean a call failed (the paper filters "Bad request", "does not match").
DEFAULT_FAILURE_PHRASES = ("bad request", "does not match", "error", "failed", "unknown function", "traceback")


class GenerateConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    out: Annotated[str, doc("run folder; re-running with the same settings resumes it")] = ""
    toolkits: Annotated[list[str], doc("toolkit names to draw functions from; empty = every built-in toolkit")] = []
    teacher: Annotated[str, doc("teacher spec (sim, openai:MODEL@URL, vllm:MODEL, hf:DIR, TOML); empty = embedded SmolLM2 (vLLM if installed, else "
                                "transformers)")] = ""
    student: Annotated[str, doc("student spec for mined negatives (typically the SFT model); empty = none")] = ""
    judge: Annotated[str, doc("judge spec for mined negatives; empty = the teacher")] = ""
    author: Annotated[str, doc("spec of the model that writes the episodes (back- and forth-translation); empty = the teacher")] = ""
    teacher_options: Annotated[dict[str, Any], doc("passed to every make_teacher call (rpm, tpm, concurrency, api_key_env, ...)")] = {}
    rollout_mode: Annotated[Literal["fc", "prompt"], doc(
        "how rollouts are sent to the teacher and student: fc = the tools block and native tool calls (API "
        "teachers); prompt = BFCL's system prompt listing the functions, calls as text (a model trained in "
        "prompt mode acting as its own teacher). Records are stored the same either way")] = "fc"
    negatives: Annotated[Literal["auto", "mined", "perturb", "none"], doc("negatives: mined from the student's mistakes, rule-based perturbations of "
                                                                          "the positive, or none; auto = mined with a student else perturb")] = "auto"
    paths: Annotated[int, doc(
        "positives to store, split over strata by the path mixture (path_options.mixture, multi_turn over "
        "multi_turn_mixture); more paths are drawn for strata that lose more (0 = use the per-kind counts)")] = 8
    single: Annotated[int, doc("single-turn positives to store (single / parallel / multiple / parallel_multiple alike); used when paths = 0")] = 0
    multi: Annotated[int, doc("multi-turn positives to store, over the multi-turn variants; used when paths = 0")] = 0
    irrelevance: Annotated[int, doc("irrelevance positives to store (only unrelated functions offered); used when paths = 0")] = 0
    draw_factor: Annotated[float, doc(
        "at most this many paths drawn per positive wanted, per stratum; a stratum that still falls short is "
        "reported as unfilled with where its paths died")] = 8.0
    stratum_patience: Annotated[int, doc(
        "stop drawing a stratum once this many of its paths failed verification while none was stored (the teacher "
        "cannot do that kind: a small model teaching itself multi-turn); a budget, so a run may resume with another "
        "value; 0 = draw up to --draw-factor", ge=0)] = 0
    path_options: Annotated[dict[str, Any], doc("extra fields of graph.paths_config.PathConfig (walk length, p_merge, ...)")] = {}
    seed: Annotated[int, doc("seed of path sampling, toolkit state, tool-order shuffling and teacher sampling")] = 0
    concurrency: Annotated[int, doc("paths worked on at once (each is a conversation of many dependent calls)")] = 16
    ray: RayAddress = ""
    ray_actors: RayActors = 0
    ray_block: RayBlock = 8
    ray_gpus: RayGpus = 0.0
    structured_outputs: Annotated[bool, doc("send response_format json_schema for translation and judging (keeps small models' JSON valid); off = "
                                            "parse free text")] = True
    rollout_grammar: Annotated[bool, doc(
        "prompt-mode rollouts on a vLLM teacher: its structured outputs force each answer to be a BFCL call list over "
        "the offered functions or plain text (the form only; verification is unchanged); other backends answer freely")] = False
    few_shot: Annotated[bool, doc(
        "add distill/prompts/positive_examples.txt (one worked example per hint shape) to the hinted teacher's "
        "instructions: a few hundred tokens per rollout, meant for small teachers; no gain measured yet")] = False
    temperature: Annotated[float, doc("sampling temperature of first attempts")] = 0.0
    retry_temperature: Annotated[float, doc("temperature of later attempts, so a retry can differ")] = 0.7
    max_tokens: Annotated[int, doc("completion token limit per teacher call (rollout steps, reference calls, judge)")] = 512
    query_max_tokens: Annotated[int, doc("completion token limit for a written user query "
                                         "(a few sentences; keeps a rambling small model fast)")] = 160
    translate_attempts: Annotated[int, doc("tries per translation step (bad JSON, invalid or failing reference calls) before dead-lettering the "
                                           "path")] = 3
    rollout_attempts: Annotated[int, doc("hinted teacher rollouts tried per episode before dead-lettering it (each must pass verification)")] = 2
    answer_retries: Annotated[int, doc("re-asks of one rollout step whose answer cannot be parsed")] = 2
    max_steps_per_turn: Annotated[int, doc("assistant steps allowed per user turn (one call per step, plus the summary)")] = 6
    student_rollouts: Annotated[int, doc("unhinted student rollouts per episode for mining mistakes (the paper uses 10)")] = 3
    negatives_per_episode: Annotated[int, doc("rejected trajectories (and pairs) wanted per episode: distinct rules (perturb) or distinct mined "
                                              "mistakes (mined)")] = 1
    failure_phrases: Annotated[list[str], doc("a turn whose final text contains one of these (case-insensitive, whole words) "
                                              "is not a positive")] = msgspec.field(default_factory=lambda: list(DEFAULT_FAILURE_PHRASES))
    card_tokenizer: Annotated[str, doc(
        "tokenizer whose token counts the data card reports (prompt-mode rendering): smollm2 = the embedded "
        "model, a local Hugging Face folder, or empty for none")] = "smollm2"
    prompts_dir: Annotated[str, doc("folder of .txt files overriding distill/prompts/ by file name")] = ""
    price_in: Annotated[float, doc("USD per 1M prompt tokens, for the cost estimate when the teacher has no price")] = 0.0
    price_out: Annotated[float, doc("USD per 1M completion tokens, for the cost estimate")] = 0.0

    def __post_init__(self) -> None:
        for name in ("paths", "single", "multi", "irrelevance", "student_rollouts", "negatives_per_episode"):
            if getattr(self, name) < 0:
                raise UserInputError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("concurrency", "translate_attempts", "rollout_attempts", "max_steps_per_turn", "max_tokens", "query_max_tokens"):
            if getattr(self, name) < 1:
                raise UserInputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.draw_factor < 1:
            raise UserInputError(f"--draw-factor must be >= 1 (paths drawn per positive wanted), got {self.draw_factor}")
        if self.paths == 0 and self.single + self.multi + self.irrelevance == 0:
            raise UserInputError("nothing to generate: give --paths N or one of --single/--multi/--irrelevance")
        if self.negatives == "mined" and not self.student:
            raise UserInputError("--negatives mined needs --student SPEC (the model whose mistakes are mined)")

    @property
    def negative_mode(self) -> str:
        if self.negatives != "auto":
            return self.negatives
        return "mined" if self.student else "perturb"

    def fingerprint_fields(self) -> dict[str, Any]:
        """What decides the run's content: resuming with other values would mix two datasets."""
        data = msgspec.to_builtins(self)
        for volatile in ("out", "concurrency", "teacher_options", "price_in", "price_out", "card_tokenizer", "stratum_patience",
                         *RAY_FIELDS):
            data.pop(volatile, None)
        for added, default in (("author", ""), ("rollout_grammar", False), ("few_shot", False)):
            if data[added] == default:
                del data[added]  # runs from before the field existed keep their fingerprint
        return data
