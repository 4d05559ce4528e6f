"""GPU check: the trainers against TRL, SFT packing and the transformers teacher, in one command.

    python -m bench.gpu_check [--out DIR] [--sizes 0.5b,1.5b] [--parts mdpo,sft,teacher]
    python -m bench.gpu_check --cpu-dry-run [--out DIR]      # same code paths, tiny model, CPU

Made for a lent GPU (one H200, ~15 minutes of device time in all, 10 per command, 64 MiB carried,
no network). Models are random-init Qwen2 checkpoints built on the spot (train/tiny_model.py
presets ``qwen2-0.5b`` and ``qwen2-1.5b``: Qwen2.5's shapes and 152k vocabulary, nothing to
download) and the data are synthetic Magnet-shaped tool-use pairs (train/samples.py). In one run:

* per size, our mDPO against TRL's DPOTrainer (bench/train_bench.py's workers: same pairs, order
  and optimizer, lambda = 0): tokens/s, peak GPU memory, and the per-step losses, which must agree;
* per size, our SFT packed (``torch_varlen``: PyTorch's built-in flash varlen kernel, see
  train/varlen_attention.py, since the machine has no ``flash_attn``) against padded (``sdpa``),
  after a probe that checks the varlen kernel's log-probs against ``sdpa`` on one packed batch;
* the in-process transformers teacher (engine/teachers/hf_local.py) at batch 1 and at rising
  concurrency up to saturation, on the first size.

All of it in bf16 (autocast over float32 weights for training, bfloat16 weights for the teacher).
Each measurement runs in its own process so peak memory is its own. Results, with the device,
versions and date, go to ``DIR/gpu_check.{json,md}`` (default bench/results; a dry run defaults
to a temporary folder, so its numbers never pass for results). Exit status 1 when a part failed
(its error is in the JSON), 2 on bad arguments. The whole run stays under ``--time-limit``.

The wheels the GPU machine lacks (it has torch, transformers, peft, accelerate, pandas, pyarrow,
xxhash, ...), downloaded here into the git-ignored .whl/:

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \\
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \\
      msgspec==0.23.0 orjson==3.13.0 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19

and the device tool's ``run`` call (carry [".whl"], timeout_s 540; results come back from $OUT):

    set -o pipefail; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; PYTHONUNBUFFERED=1
      python3 -m bench.gpu_check --out $OUT 2>&1 | tee $OUT/gpu_check.log
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.results_io import RESULTS, describe, machine, utc_now, write_results
from engine.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]
NAME = "gpu_check"
SIZES = {"0.5b": "qwen2-0.5b", "1.5b": "qwen2-1.5b"}
PARTS = ("mdpo", "sft", "teacher")
LIBRARIES = ("torch", "transformers", "trl", "datasets", "accelerate", "peft", "msgspec")
# Step-1 losses are ln 2 on both sides; later steps drift with bf16 rounding on GPU, not on CPU.
LOSS_TOLERANCE = {"cuda": 2e-2, "cpu": 1e-4}
VARLEN_TOLERANCE = {"cuda": 0.1, "cpu": 1e-4}  # max |log-prob difference| packed varlen vs sdpa
COMPARED_STEPS = 3


@dataclass(frozen=True)
class Settings:
    """What one run measures; ``gpu()`` and ``cpu_dry_run()`` are the two sets used."""

    device: str = field(metadata={"help": "cuda, or cpu for the dry run"})
    sizes: dict[str, str] = field(metadata={"help": "size label -> train/tiny_model.py preset"})
    steps: int = field(metadata={"help": "optimizer steps of every trainer run"})
    batch: int = field(metadata={"help": "mDPO pairs per optimizer step"})
    micro: int = field(metadata={"help": "mDPO pairs per forward pass"})
    sft_batch: int = field(metadata={"help": "SFT sequences per step, all in one forward pass (one packed row)"})
    levels: list[int] = field(metadata={"help": "teacher concurrency levels; the first is 1 (batch 1)"})
    rounds: int = field(metadata={"help": "requests each concurrent teacher client sends in turn per level"})
    max_tokens: int = field(metadata={"help": "tokens per teacher answer (random models rarely stop earlier)"})
    teacher_dtype: str = field(metadata={"help": "teacher weights' dtype"})

    @staticmethod
    def gpu() -> Settings:
        return Settings(device="cuda", sizes=dict(SIZES), steps=10, batch=16, micro=4, sft_batch=16,
                        levels=[1, 16, 64, 256], rounds=3, max_tokens=64, teacher_dtype="bfloat16")

    @staticmethod
    def cpu_dry_run() -> Settings:
        return Settings(device="cpu", sizes={"tiny": "tiny"}, steps=2, batch=2, micro=1, sft_batch=2,
                        levels=[1, 4], rounds=1, max_tokens=8, teacher_dtype="float32")


# -- workers: each runs in its own process (``--worker KIND --spec JSON``) ------------------------

def worker_probe(spec: dict) -> dict:
    """The device, and the varlen kernel's log-probs against sdpa's on one packed batch (forward and
    one backward through it), so a packed-SFT speed-up is never bought with wrong attention."""
    import torch

    from train import varlen_attention
    from train.batch import TokenLogProbs, collate, token_logps
    from train.data import ChatRenderer, sft_examples
    from train.loop import load_causal_lm, load_tokenizer
    from train.samples import trajectory

    varlen_attention.register()
    device = torch.device(spec["device"])
    tok = load_tokenizer(spec["model"])
    records = [trajectory(i, turns=1 + i % 3) for i in range(8)]
    examples, _ = sft_examples(records, ChatRenderer(tok, source=spec["model"], max_length=4096))
    lm = load_causal_lm(spec["model"], "sdpa").to(device)
    module = TokenLogProbs(lm)
    batch = collate(examples, packing=True, pad_id=tok.pad_token_id).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.no_grad(), autocast:
        reference = token_logps(module, batch).float()
    lm.set_attn_implementation(varlen_attention.NAME)
    with autocast:
        logp = token_logps(module, batch)
    (-logp.float().sum()).backward()
    grads = [p.grad for p in lm.parameters() if p.grad is not None]
    grads_finite = bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads)
    diff = (logp.detach().float() - reference).abs()
    out = {"tokens": int(batch.n_tokens), "sequences": len(examples), "max_abs_logp_diff": float(diff.max()),
           "mean_abs_logp_diff": float(diff.mean()), "grads_finite": grads_finite,
           "matches_sdpa": float(diff.max()) <= VARLEN_TOLERANCE[device.type] and grads_finite,
           "flash_kernel": varlen_attention.kernel_available(), "torch_cuda": torch.version.cuda}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}"}
    return out


def worker_teacher(spec: dict) -> dict:
    """Completion tokens/s of HFTeacher at each concurrency level: ``level`` clients, each sending
    ``rounds`` requests one after another, so the teacher's own batching decides the batches."""
    import asyncio

    import torch

    from engine.errors import BadAnswer
    from engine.teachers.hf_local import HFTeacher
    from train.samples import TOOLS, trajectory

    prompts = []
    for i in range(32):  # conversations up to their last user turn: what a teacher is asked
        msgs = trajectory(i, turns=1 + i % 3).messages
        prompts.append(msgs[:max(j for j, m in enumerate(msgs) if m.role == "user") + 1])
    teacher = HFTeacher(spec["model"], batch_size=max(spec["levels"]), dtype=spec["dtype"], device=spec["device"])

    async def ask(i: int) -> int:
        try:
            done = await teacher.chat(prompts[i % len(prompts)], TOOLS, max_tokens=spec["max_tokens"])
            return done.usage.completion_tokens
        except BadAnswer as err:  # a random model rarely stops or writes valid calls; its tokens still count
            if err.usage is None:
                raise
            return err.usage.completion_tokens

    async def level(n: int) -> dict:
        first = len(teacher.batches)

        async def client(c: int) -> int:
            return sum([await ask(c * spec["rounds"] + r) for r in range(spec["rounds"])])

        t0 = time.perf_counter()
        tokens = sum(await asyncio.gather(*(client(c) for c in range(n))))
        seconds = time.perf_counter() - t0
        batches = teacher.batches[first:]
        return {"concurrency": n, "requests": n * spec["rounds"], "completion_tokens": tokens,
                "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
                "generate_calls": len(batches), "mean_batch": round(sum(batches) / len(batches), 2),
                "max_batch": max(batches)}

    async def run() -> list[dict]:
        await ask(0)  # loads the model; the first generate pays the device's start-up
        try:
            return [await level(n) for n in spec["levels"]]
        finally:
            await teacher.aclose()

    levels = asyncio.run(run())
    peak = int(torch.cuda.max_memory_allocated()) if spec["device"] == "cuda" else None
    return {"levels": levels, "peak_bytes": peak}


def worker_trainer(kind: str, spec: dict) -> dict:
    from bench.train_bench import WORKERS
    from train import varlen_attention

    varlen_attention.register()  # this process may load a model with attn_implementation="torch_varlen"
    return WORKERS[kind](spec)


WORKERS = {"probe": worker_probe, "teacher": worker_teacher}


# -- the run ---------------------------------------------------------------------------------------

class Runner:
    """Spawns workers against one deadline; a failed or timed-out part is recorded, not fatal."""

    def __init__(self, time_limit: float):
        self.deadline = time.monotonic() + time_limit
        self.errors: list[str] = []

    def spawn(self, label: str, kind: str, spec: dict) -> dict | None:
        left = self.deadline - time.monotonic()
        if left < 10:
            self.errors.append(f"{label}: skipped, the --time-limit was used up")
            return None
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        print(f"[gpu_check] {label} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            command = [sys.executable, "-m", "bench.gpu_check", "--worker", kind, "--spec", json.dumps(spec)]
            proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, timeout=left)
        except subprocess.TimeoutExpired:
            self.errors.append(f"{label}: stopped at the --time-limit after {left:.0f} s")
            return None
        if proc.returncode != 0:
            self.errors.append(f"{label}: worker exited {proc.returncode}: {proc.stderr[-3000:]}")
            return None
        print(f"[gpu_check] {label} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        try:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            self.errors.append(f"{label}: the worker's last output line is not its JSON result: {proc.stdout[-500:]!r}")
            return None


def build_model(preset: str, cache: Path) -> str:
    """A random checkpoint of ``preset``, built when first needed (1.5B takes a while on CPU)."""
    from train.tiny_model import build_random_model

    out = cache / f"random-{preset}"
    if not (out / "config.json").is_file():
        t0 = time.perf_counter()
        build_random_model(out, preset=preset)
        print(f"[gpu_check] built {preset} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return str(out)


def _rate(r: dict) -> float:
    return r["tokens"] / r["seconds"]


def compare_mdpo(ours: dict, trl: dict, device: str) -> dict:
    n = min(len(ours["losses"]), len(trl["losses"]), COMPARED_STEPS)
    diff = max(abs(a - b) for a, b in zip(ours["losses"][:n], trl["losses"][:n]))
    return {"ours": ours, "trl": trl, "ours_tokens_per_s": round(_rate(ours), 1),
            "trl_tokens_per_s": round(_rate(trl), 1), "speedup": round(_rate(ours) / _rate(trl), 3),
            "peak_memory_ratio": round(ours["peak_bytes"] / trl["peak_bytes"], 3),
            "compared_steps": n, "max_abs_loss_diff": diff, "losses_equal": diff <= LOSS_TOLERANCE[device]}


def compare_sft(packed: dict, padded: dict) -> dict:
    return {"packed": packed, "padded": padded, "packed_tokens_per_s": round(_rate(packed), 1),
            "padded_tokens_per_s": round(_rate(padded), 1), "packing_speedup": round(_rate(packed) / _rate(padded), 3)}


def targets(result: dict) -> dict:
    """The issue's targets, per size: mDPO >= 1.5x TRL at equal loss and no more memory; packed > padded."""
    out = {}
    if result.get("varlen_probe"):
        out["varlen kernel matches sdpa"] = result["varlen_probe"]["matches_sdpa"]
    for label, part in result["sizes"].items():
        if "mdpo" in part:
            m = part["mdpo"]
            out[f"{label} mdpo"] = m["speedup"] >= 1.5 and m["losses_equal"] and m["peak_memory_ratio"] <= 1.0
        if "sft" in part:
            out[f"{label} sft packing"] = part["sft"]["packing_speedup"] > 1.0
    return out


def run_check(s: Settings, parts: list[str], out_dir: Path, time_limit: float, cache: Path) -> dict:
    runner = Runner(time_limit)
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "mode": "gpu" if s.device == "cuda" else "cpu-dry-run", "date": utc_now(),
        "machine": machine(**{lib: _version(lib) for lib in LIBRARIES}), "settings": asdict(s),
        "precision": "bf16 autocast over float32 weights (TRL: bf16=True); teacher weights " + s.teacher_dtype
        if s.device == "cuda" else "float32 (CPU)", "sizes": {}, "errors": runner.errors}

    def save() -> None:
        result["wall_seconds"] = round(time.perf_counter() - t0, 1)
        result["targets_met"] = targets(result)
        write_results(NAME, result, markdown(result), out_dir)

    first = next(iter(s.sizes))
    base = {"device": s.device, "lr": 1e-5, "steps": s.steps, "batch": s.batch, "micro": s.micro,
            "pairs": s.steps * s.batch, "sft_batch": s.sft_batch}
    # always first: it names the device, and it checks the kernel packed SFT relies on
    probe = {"device": s.device, "model": build_model(s.sizes[first], cache)}
    result["varlen_probe"] = runner.spawn("varlen probe", "probe", probe)
    save()
    for label, preset in s.sizes.items():
        model = build_model(preset, cache)
        spec = base | {"model": model}
        part: dict[str, Any] = result["sizes"].setdefault(label, {"model": preset})
        if "mdpo" in parts:
            ours, trl = runner.spawn(f"{label} mdpo ours", "ours", spec), runner.spawn(f"{label} mdpo trl", "trl", spec)
            if ours and trl:
                part["mdpo"] = compare_mdpo(ours, trl, s.device)
            save()
        if "sft" in parts:
            packed = runner.spawn(f"{label} sft packed", "sft", spec | {"packing": "on", "attn": "torch_varlen"})
            padded = runner.spawn(f"{label} sft padded", "sft", spec | {"packing": "off", "attn": "sdpa"})
            if packed and padded:
                part["sft"] = compare_sft(packed, padded)
            save()
        if "teacher" in parts and label == first:
            teacher = runner.spawn(f"{label} teacher", "teacher", {
                "device": s.device, "model": model, "dtype": s.teacher_dtype, "levels": s.levels, "rounds": s.rounds,
                "max_tokens": s.max_tokens})
            if teacher:
                result["teacher"] = teacher | {"size": label}
            save()
    save()
    return result


def markdown(r: dict) -> str:
    gib = lambda b: f"{b / 2**30:.2f} GiB" if b is not None else "-"  # noqa: E731
    probe = r.get("varlen_probe") or {}
    lines = [f"# GPU check ({r['mode']})", "", f"Date {r['date']}; {describe(r['machine'])}; "
             + ", ".join(f"{lib} {r['machine'].get(lib)}" for lib in LIBRARIES[1:]) + ".",
             f"Device: {probe.get('gpu', r['settings']['device'])}; precision: {r['precision']}; "
             f"wall {r.get('wall_seconds')} s.", "", f"Settings: {r['settings']}", ""]
    if probe:
        kernel = "used" if probe["flash_kernel"] else "absent, per-sequence SDPA path"
        lines += [f"Varlen probe (packed batch of {probe['sequences']} sequences, {probe['tokens']} tokens): "
                  f"torch flash varlen kernel {kernel}; max |log-prob difference| vs sdpa "
                  f"{probe['max_abs_logp_diff']:.2e} (mean {probe['mean_abs_logp_diff']:.2e}); "
                  f"gradients finite: {probe['grads_finite']} (tolerance {VARLEN_TOLERANCE[r['settings']['device']]}).",
                  ""]
    for label, part in r["sizes"].items():
        if "mdpo" in part:
            m = part["mdpo"]
            lines += [f"## {label} ({part['model']}): mDPO vs TRL DPOTrainer (same pairs, order, optimizer; "
                      "lambda = 0)", "",
                      "| trainer | tokens/s | seconds | peak memory | losses per step |", "|---|---|---|---|---|"]
            for side in ("ours", "trl"):
                x = m[side]
                lines.append(f"| {side} | {m[side + '_tokens_per_s']} | {x['seconds']:.1f} | {gib(x['peak_bytes'])} | "
                             f"{[round(v, 5) for v in x['losses']]} |")
            lines += ["", f"Speed-up {m['speedup']}x; peak memory ratio {m['peak_memory_ratio']}; max |loss "
                      f"difference| over the first {m['compared_steps']} steps {m['max_abs_loss_diff']:.2e} "
                      f"(equal: {m['losses_equal']}).", ""]
        if "sft" in part:
            f = part["sft"]
            lines += [f"## {label}: SFT packed (torch_varlen) vs padded (sdpa)", "",
                      "| mode | tokens/s | seconds | peak memory |", "|---|---|---|---|"]
            lines += [f"| {mode} | {f[mode + '_tokens_per_s']} | {f[mode]['seconds']:.1f} | "
                      f"{gib(f[mode]['peak_bytes'])} |" for mode in ("packed", "padded")]
            lines += ["", f"Packing speed-up {f['packing_speedup']}x.", ""]
    if r.get("teacher"):
        t = r["teacher"]
        lines += [f"## transformers teacher ({t['size']}, {r['settings']['teacher_dtype']}), "
                  f"peak memory {gib(t['peak_bytes'])}", "",
                  "| concurrency | requests | tokens/s | mean batch | generate calls |", "|---|---|---|---|---|"]
        lines += [f"| {x['concurrency']} | {x['requests']} | {x['tokens_per_s']} | {x['mean_batch']} | "
                  f"{x['generate_calls']} |" for x in t["levels"]]
        best = max(t["levels"], key=lambda x: x["tokens_per_s"])
        lines += ["", f"Saturation: {best['tokens_per_s']} tokens/s at concurrency {best['concurrency']} "
                  f"({best['tokens_per_s'] / t['levels'][0]['tokens_per_s']:.1f}x batch 1).", ""]
    lines += ["## Targets", ""] + [f"- {k}: {'met' if v else '**not met**'}" for k, v in r["targets_met"].items()]
    if r["errors"]:
        lines += ["", f"Errors: {len(r['errors'])}", ""] + [f"- {e.splitlines()[0]}" for e in r["errors"]]
    lines.append("")
    return "\n".join(lines)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--cpu-dry-run", action="store_true", help="run every code path on a tiny model on CPU (for CI)")
    p.add_argument("--out", help="folder for gpu_check.{json,md} (default: bench/results; dry run: a temporary folder)")
    p.add_argument("--sizes", help=f"comma-separated model sizes: {', '.join(SIZES)} (default: all; dry run: tiny)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts to run: {', '.join(PARTS)}")
    p.add_argument("--time-limit", type=float, default=450.0,
                   help="seconds for the whole run; parts left over are skipped")
    p.add_argument("--cache", help="where the random models are built (default: a temporary folder)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        spec = json.loads(a.spec)
        print(json.dumps(WORKERS[a.worker](spec) if a.worker in WORKERS else worker_trainer(a.worker, spec)))
        return 0
    parts = [x for x in a.parts.split(",") if x]
    if not parts or set(parts) - set(PARTS):
        raise UserInputError(f"--parts {a.parts!r}: use a comma-separated subset of {', '.join(PARTS)}")
    if a.time_limit <= 0 or not math.isfinite(a.time_limit):
        raise UserInputError(f"--time-limit {a.time_limit:g}: give a positive number of seconds")
    wanted = [x for x in (a.sizes or ",".join(SIZES)).split(",") if x]
    if not wanted or set(wanted) - set(SIZES):
        raise UserInputError(f"--sizes {a.sizes!r}: use a comma-separated subset of {', '.join(SIZES)}")
    if a.cpu_dry_run:
        s = Settings.cpu_dry_run()
    else:
        import torch

        if not torch.cuda.is_available():
            raise UserInputError("no CUDA device is visible; run this on the GPU machine, or pass --cpu-dry-run")
        s = Settings(**(asdict(Settings.gpu()) | {"sizes": {k: SIZES[k] for k in wanted}}))
    # a dry run's numbers must never land in bench/results, where they would pass for GPU results
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="magnet-gpu-check-")) if a.cpu_dry_run else RESULTS
    with tempfile.TemporaryDirectory(prefix="magnet-gpu-check-models-") as tmp:
        result = run_check(s, parts, out, a.time_limit, Path(a.cache) if a.cache else Path(tmp))
    print(markdown(result))
    print(f"[gpu_check] wrote {out / NAME}.json and .md", file=sys.stderr)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
