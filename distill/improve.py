"""`magnet improve`: rounds of self-improvement, every stage resumable.

    magnet improve --model smollm2 --rounds 2 --out runs/improve [--config improve.toml]

Before round 0 the starting model is scored on the held-out split (``base``). Then per round N,
in ``OUT/round-N/``, each stage skipped when its marker says it finished:

1. probe: `magnet eval paths` of the current model on the probe split (OUT/testsets/probe);
2. target: the path mixture tilted toward the strata the probe failed, and function choice toward
   the functions its first wrong steps were about (target.json; distill/improve_target.py);
3. generate: `magnet generate` with the current model as its own hinted teacher in prompt mode
   (or the named --teacher; round 0 may use --bootstrap-teacher, e.g. the simulator), episodes
   written by --author, negatives mined from the current model's own mistakes;
4. train_sft, then train_mdpo on the round's pairs, continuing from the current checkpoint;
5. eval: the new checkpoint (served by vLLM) on the held-out split (OUT/testsets/heldout), and on
   the BFCL subset of --bfcl-categories when set (the base model too; reported, never choosing);
6. decide: the new checkpoint becomes current when its held-out score did not fall; else the
   loop stops and keeps the best.

With --overlap and a round whose generation needs nothing of the model being trained
(a teacher other than self, negatives not mined), that round's target and generation run in the
background while the previous round trains, steered by the previous round's probe (one round
stale; distill/improve_overlap.py). Each round still probes its own starting model.

With --ray ADDRESS the probe, generation and evaluation stages lease their episodes and paths to
Ray actors (as `magnet eval paths --ray` and `magnet generate --ray`); each actor serves the
checkpoint itself (its own vLLM on the GPU --ray-gpus gives it). Test sets are still authored
here, and training and BFCL run here.

rounds.json, report.md and rounds.png are rewritten after every round. kill -9 at any point and
rerun the same command: finished stages are skipped, the interrupted one resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import msgspec

from distill.improve_config import SELF, ImproveConfig
from distill.improve_overlap import Ahead
from distill.improve_report import teacher_label, write_report
from distill.improve_serve import Served
from distill.improve_stages import Stages
from engine.config_cli import ConfigCLI
from engine.errors import UserInputError
from engine.ray_leases import RAY_FIELDS

CONFIG_FILE = "improve_config.json"
# Changing these on a resumed loop does not change what finished stages mean.
RESUMABLE_CHANGES = ("rounds", "out", "concurrency", "stratum_patience", *RAY_FIELDS)


# Every option is an ImproveConfig field; a TOML file may hold them flat or under [improve].
CONFIG = ConfigCLI(ImproveConfig, section="improve")


def load_config(argv: list[str]) -> ImproveConfig:
    p = argparse.ArgumentParser(prog="magnet improve", description=__doc__.split("\n\n")[0])
    CONFIG.add_arguments(p)
    return CONFIG.load(p.parse_args(argv))


def check_resume(out: Path, cfg: ImproveConfig) -> None:
    """A loop folder keeps the settings it began with; only the round count (and speed) may change."""
    from engine.store import write_json_atomic

    mine = msgspec.to_builtins(cfg)
    stored_file = out / CONFIG_FILE
    if stored_file.exists():
        stored = json.loads(stored_file.read_text())
        changed = sorted(k for k in set(mine) | set(stored) if k not in RESUMABLE_CHANGES and mine.get(k) != stored.get(k))
        if changed:
            raise UserInputError(f"{out} was started with other settings ({', '.join(changed)}); "
                                 "rerun with the same ones to resume, or give a new --out")
    write_json_atomic(stored_file, mine)


def _checkpoint_dir(model: str) -> str:
    if model == "smollm2":
        from engine.models import smollm2_checkpoint

        return str(smollm2_checkpoint())
    if not (Path(model) / "config.json").is_file():
        raise UserInputError(f"--model {model}: not a Hugging Face checkpoint folder (no config.json); give one, or smollm2")
    return str(Path(model).resolve())


class Loop:
    def __init__(self, cfg: ImproveConfig):
        self.cfg, self.out = cfg, Path(cfg.out).expanduser().resolve()
        self.served = Served(cfg.serve, cfg.serve_options)
        self.ahead: dict[int, Ahead] = {}  # round -> its generation, running while the round before trains

    # -- stages -------------------------------------------------------------------------------

    def placement(self) -> dict[str, Any]:
        """A probe, generation or evaluation config's fields for where it runs: with --ray, the Ray fields and the
        options every actor builds (and serves) the checkpoint with from its spec; none without."""
        if not self.cfg.ray:
            return {}
        return {f: getattr(self.cfg, f) for f in RAY_FIELDS} | {"teacher_options": self.served.teacher_overrides()}

    def eval_paths(self, checkpoint: str, folder: Path, split: str) -> dict[str, Any]:
        """`magnet eval paths` of ``checkpoint`` on a split; the report's scores per stratum."""
        from distill.eval_config import EvalPathsConfig
        from distill.eval_paths import _eval
        from engine.scheduler import run

        cfg = self.cfg
        seed, per_kind = (cfg.seed, cfg.eval_per_kind) if split == "heldout" else (cfg.seed + 1, cfg.probe_per_kind)
        config = EvalPathsConfig(out=str(folder), testset=str(self.out / "testsets" / split), model=self.served.spec(checkpoint),
                                 toolkits=cfg.toolkits, author=cfg.author, kinds=cfg.kinds, per_kind=per_kind, seed=seed,
                                 max_tokens=cfg.max_tokens, concurrency=cfg.concurrency, **self.placement())
        # A garbled answer is the model's answer. With --ray the actors build the model (model_kwargs does the same).
        build = None if cfg.ray else self.served.builder(checkpoint, max_bad_answer_retries=0)
        report = run(_eval(config, set(), argparse.Namespace(progress=False), build))
        if report.get("interrupted") or report["this_run"]["interrupted"]:
            raise KeyboardInterrupt
        scores = {k: s["accuracy"] for k, s in report["by_kind"].items()}
        return {"categories": scores | {"overall": report["overall"]["accuracy_macro"] or 0.0},
                "score": report["overall"]["accuracy_macro"] or 0.0, "episodes": report["episodes"],
                "tokens": report["this_run"]["prompt_tokens"] + report["this_run"]["completion_tokens"],
                "report": str(folder / "report.json")}

    def bfcl(self, checkpoint: str, folder: Path) -> dict[str, float]:
        """BFCL subset scores (reported beside the paths scores; they never choose the checkpoint)."""
        if not self.cfg.bfcl_categories:
            return {}
        from bench.bfcl.cli import main as bfcl_main

        self.served.stop()  # `magnet eval bfcl` serves the checkpoint itself
        code = bfcl_main(["--model", self.served.spec(checkpoint), "--categories", *self.cfg.bfcl_categories,
                          "--limit", str(self.cfg.bfcl_limit),
                          *[f"--category-limit={k}={v}" for k, v in self.cfg.bfcl_category_limits.items()], "--out", str(folder), "--no-progress",
                          "--max-tokens", str(self.cfg.max_tokens)])
        if code:
            raise KeyboardInterrupt
        cats = json.loads((folder / "report.json").read_text())["categories"]
        return {f"bfcl:{k}": (v["accuracy"] if isinstance(v, dict) else v) for k, v in cats.items()}

    def target(self, probe: dict[str, Any], folder: Path) -> dict[str, Any]:
        from distill.improve_target import target
        from engine.store import write_json_atomic

        report = json.loads(Path(probe["report"]).read_text())
        doc = target(report, self.cfg.kinds, self.cfg.tilt_floor)
        write_json_atomic(folder / "target.json", doc)
        return doc

    def generate(self, n: int, current: str | None, target: dict[str, Any], folder: Path) -> dict[str, Any]:
        """Round ``n``'s data; ``current`` is None for an overlapped round, whose generation uses no model being trained."""
        from distill.cli import _generate
        from distill.generate_config import GenerateConfig
        from engine.scheduler import run

        cfg = self.cfg
        me = self.served.spec(current) if current is not None else None
        assert me is not None or not self.needs_current(n), "only an overlapped round generates without the current model"
        teacher = me if cfg.round_teacher(n) == SELF else cfg.round_teacher(n)
        # generate's toolkits are built-in names (empty = all); "builtin" is eval paths' word for all of them.
        toolkits = [] if "builtin" in cfg.toolkits else list(cfg.toolkits)
        gcfg = GenerateConfig(out=str(folder), toolkits=toolkits, teacher=teacher, author=cfg.author, judge=cfg.judge,
                              student=me if cfg.negatives == "mined" and me else "", negatives=cfg.negatives,
                              rollout_mode=cfg.rollout_mode, paths=cfg.positives, draw_factor=cfg.draw_factor,
                              stratum_patience=cfg.stratum_patience,
                              path_options=target["path_options"], seed=cfg.seed + n, concurrency=cfg.concurrency,
                              max_tokens=cfg.max_tokens, student_rollouts=cfg.student_rollouts, card_tokenizer="", **self.placement())
        build = self.served.builder(current) if current is not None and me in (gcfg.teacher, gcfg.student) and not cfg.ray else None
        summary = run(_generate(gcfg, argparse.Namespace(progress=False, force=False), build))
        if summary["interrupted"]:
            raise KeyboardInterrupt
        if not summary["positives"]:
            raise UserInputError(f"round {n}: {teacher_label(teacher)} produced no verified positive (see `magnet inspect "
                                 f"{folder}`); name a stronger --teacher, or --bootstrap-teacher for round 0")
        return {"teacher": teacher, "positives": summary["positives"], "pairs": summary["pairs"],
                "yield": summary["yield_positive"], "tokens": summary["prompt_tokens"] + summary["completion_tokens"],
                "dead_letters": summary["dead_letters"]}

    def train(self, stage: str, n: int, data: Path, model: str, folder: Path) -> dict[str, Any]:
        """SFT or mDPO from ``model`` in prompt mode; an interrupted run continues from its last checkpoint."""
        from train.loop import latest_checkpoint

        if stage == "sft":
            from train.sft import run_sft as run_stage
            from train.sft_config import SFTConfig as Config
        else:
            from train.mdpo import run_mdpo as run_stage
            from train.mdpo_config import MDPOConfig as Config
        options = self.cfg.sft_options if stage == "sft" else self.cfg.mdpo_options
        extra = {} if stage == "sft" else {"ref_cache_dir": str(folder.parent / "mdpo_ref_cache")}
        try:
            tcfg = msgspec.convert({"mode": "prompt", "seed": self.cfg.seed + n, **extra, **options}, Config)
        except msgspec.ValidationError as err:
            raise UserInputError(f"improve {stage}_options: {err}; see `magnet train {stage} --help`") from None
        self.served.stop()  # training wants every CPU; the next stage serves the new checkpoint
        resume = latest_checkpoint(folder) if (folder / "checkpoints").is_dir() else None
        summary = run_stage(tcfg, data=data, model=_checkpoint_dir(model), out=folder, resume=resume)
        return {"checkpoint": str(folder / "final"), "steps": summary["steps"], "train_seconds": summary["train_seconds"]}

    def train_mdpo(self, n: int, folder: Path, sft_checkpoint: str) -> dict[str, Any]:
        """mDPO after SFT; skipped (the SFT checkpoint goes on) when none of the round's pairs is usable."""
        from train.data import NoExamples

        try:
            return self.train("mdpo", n, folder / "generate", sft_checkpoint, folder / "train_mdpo")
        except NoExamples as err:
            return {"skipped": f"no usable pair ({err.skipped})"}

    # -- the loop -----------------------------------------------------------------------------

    def needs_current(self, n: int) -> bool:
        """Does round ``n``'s generation use the model being improved (as hinted teacher or mined student)?"""
        return self.cfg.round_teacher(n) == SELF or self.cfg.negatives == "mined"

    def overlapped(self, n: int) -> bool:
        """Round ``n`` (> 0) generates while round n-1 trains, steered by round n-1's probe."""
        return self.cfg.overlap and n > 0 and not self.needs_current(n)

    def prepare(self, n: int, probe: dict[str, Any], current: str | None) -> dict[str, Any]:
        """Round ``n``'s target and generation stages (markers in round-n/ either way); the generation's result.
        ``current`` is None for an overlapped round."""
        folder = self.out / f"round-{n}"
        st = Stages(folder)
        target = st.run("target", lambda: self.target(probe, folder))
        return st.run("generate", lambda: self.generate(n, current, target, folder / "generate"))

    def run(self) -> dict[str, Any]:
        cfg, out = self.cfg, self.out
        _checkpoint_dir(cfg.model)  # a wrong --model fails here, before anything is written
        out.mkdir(parents=True, exist_ok=True)
        check_resume(out, cfg)
        meta = {"out": str(out), "model": cfg.model, "serve": cfg.serve, "author": teacher_label(cfg.author),
                "score": "macro accuracy over strata, held-out split of `magnet eval paths`"}
        try:
            base = Stages(out / "base")
            ev = base.run("eval", lambda: self.eval_paths(cfg.model, out / "base" / "eval", "heldout")
                          | {"bfcl": self.bfcl(cfg.model, out / "base" / "bfcl_eval")})
            rounds = [{"round": "base", "categories": ev["categories"] | ev["bfcl"], "score": ev["score"],
                       "checkpoint": cfg.model, "accepted": True, "wall_s": base.wall_s()}]
            current, best = cfg.model, ev["score"]
            stopped = ""
            for n in range(cfg.rounds):
                entry = self.round(n, current, best)
                rounds.append(entry)
                self.report(rounds, meta, stopped)
                if not entry["accepted"]:
                    stopped = f"round {n}: held-out score {entry['score']:.3f} fell below {best:.3f}; kept the best checkpoint"
                    break
                current, best = entry["checkpoint"], entry["score"]
            return self.report(rounds, meta, stopped)
        finally:
            self.served.stop()

    def round(self, n: int, current: str, best: float) -> dict[str, Any]:
        folder = self.out / f"round-{n}"
        st = Stages(folder)
        # No BFCL at the probe: the checkpoint probed was scored on BFCL by the evaluation before it.
        probe = st.run("probe", lambda: self.eval_paths(current, folder / "probe", "probe"))
        if self.overlapped(n):
            if n in self.ahead:  # started while round n-1 trained; normally finished (joined before its evaluation)
                self.ahead.pop(n).join()
            steer = Stages(self.out / f"round-{n - 1}").result("probe")
            assert steer is not None, "round n-1 probed before round n was started"
            gen = self.prepare(n, steer, None)
        else:
            gen = self.prepare(n, probe, current)
        # This round's probe steers the next round's generation when that one overlaps this round's training.
        if n + 1 < self.cfg.rounds and self.overlapped(n + 1) and n + 1 not in self.ahead:
            self.ahead[n + 1] = Ahead(f"generate round {n + 1}", lambda: self.prepare(n + 1, probe, None))
        sft = st.run("train_sft", lambda: self.train("sft", n, folder / "generate", current, folder / "train_sft"))
        if self.cfg.mdpo and gen["pairs"]:
            mdpo = st.run("train_mdpo", lambda: self.train_mdpo(n, folder, sft["checkpoint"]))
        else:
            mdpo = st.run("train_mdpo", lambda: {"skipped": "mdpo off" if not self.cfg.mdpo else "no preference pairs this round"})
        checkpoint = mdpo.get("checkpoint", sft["checkpoint"])
        if n + 1 in self.ahead:
            self.ahead[n + 1].join()  # evaluation wants every CPU and the process's token counters to itself
        ev = st.run("eval", lambda: self.eval_paths(checkpoint, folder / "eval", "heldout")
                    | {"bfcl": self.bfcl(checkpoint, folder / "bfcl_eval")})
        decision = st.run("decide", lambda: {"score": ev["score"], "best_before": best, "accepted": ev["score"] >= best})
        return {"round": n, "teacher": teacher_label(gen["teacher"]), "categories": ev["categories"] | ev["bfcl"],
                "probe": probe["categories"], "score": ev["score"], "positives": gen["positives"],
                "pairs": gen["pairs"], "yield": gen["yield"], "tokens": gen["tokens"], "eval_tokens": probe["tokens"] + ev["tokens"],
                "sft_steps": sft["steps"], "mdpo": mdpo.get("skipped") or f"{mdpo['steps']} steps",
                "wall_s": st.wall_s(), "checkpoint": checkpoint, "accepted": decision["accepted"]}

    def report(self, rounds: list[dict[str, Any]], meta: dict[str, Any], stopped: str) -> dict[str, Any]:
        kept = max((i for i, r in enumerate(rounds) if r["accepted"]), default=0)
        rounds = [r | {"chosen": i == kept} for i, r in enumerate(rounds)]
        return write_report(self.out, rounds, meta | ({"stopped": stopped} if stopped else {}))


def main(argv: list[str]) -> int:
    cfg = load_config(argv)
    doc = Loop(cfg).run()
    for r in doc["rounds"]:
        print(f"round {r['round']}: held-out {r['score']:.1%}{'  <- chosen' if r['chosen'] else ''}  ({r['checkpoint']})")
    print(f"report: {Path(cfg.out) / 'report.md'}")
    return 0
