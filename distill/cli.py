"""`magnet generate`: toolkits -> graph -> lazy path stream -> per-path jobs -> run folder, with a
live progress line and a final table.

Every option is a GenerateConfig field; ``--config FILE.toml`` fills them first and flags
override. The dependency graph is built once per run (offline matcher) and cached in the run
folder. Re-running with the same settings resumes: finished paths are skipped, nothing is
stored twice; different settings on the same folder are refused by the store.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from distill.generate_config import GenerateConfig
from engine.atomic import write_atomic
from engine.config_cli import ConfigCLI
from engine.errors import UserInputError
from engine.reasons import reason_key

GRAPH_FILE = "graph.json.gz"
SUMMARY_FILE = "generate_summary.json"
SINGLE_KINDS = ("single", "parallel", "multiple", "parallel_multiple")


def default_teacher() -> str:
    """The embedded SmolLM2: served by vLLM when it is installed (structured outputs), else transformers."""
    return "vllm:smollm2" if importlib.util.find_spec("vllm") is not None else "hf:smollm2"


# Every option is a GenerateConfig field; a TOML file may hold them flat or under [generate].
CONFIG = ConfigCLI(GenerateConfig, section="generate")
# Shortcuts for the most used teacher_options keys (--teacher-option KEY=VALUE sets any of them).
TEACHER_SHORTCUTS = {"rpm": int, "tpm": int, "max_concurrency": int, "timeout_s": float}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magnet generate", description=__doc__.split("\n\n")[0])
    CONFIG.add_arguments(p)
    for name, kind in TEACHER_SHORTCUTS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=f"teacher.{name}", type=kind, metavar="N",
                       default=argparse.SUPPRESS, help=f"teacher option {name} (passed to every teacher)")
    p.add_argument("--api-key-env", dest="teacher.api_key_env", metavar="VAR", default=argparse.SUPPRESS,
                   help="environment variable holding the API key")
    p.add_argument("--force", action="store_true", help="discard an existing run in --out made with other settings")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no live progress line")
    return p


def load_config(argv: list[str]) -> tuple[GenerateConfig, argparse.Namespace]:
    args = _parser().parse_args(argv)
    flags = CONFIG.flag_values(args)
    data = CONFIG.values(args)
    shortcuts = {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith("teacher.")}
    if shortcuts:
        data["teacher_options"] = {**data.get("teacher_options", {}), **shortcuts}
    if any(k in flags for k in ("single", "multi", "irrelevance")) and "paths" not in flags:
        data["paths"] = 0  # per-kind counts given: they replace the default total
    config = CONFIG.convert(data)
    if not config.out:
        raise UserInputError("--out is required: the run folder to write (or resume)")
    if not config.teacher:
        config.teacher = default_teacher()
    return config, args


def strata_targets(config: GenerateConfig) -> dict[str, int]:
    """Stored positives wanted per stratum: --paths N spread over the path mixture (multi_turn over
    its variants), else the per-kind counts (--single over the four single-turn kinds)."""
    from distill.strata import strata_weights
    from graph.paths import apportion
    from graph.paths_config import path_config

    path_cfg = path_config(config.path_options, where="path_options")
    if config.paths:
        return apportion(strata_weights(path_cfg, path_cfg.mixture), config.paths)
    counts = apportion({k: 1.0 for k in SINGLE_KINDS}, config.single) if config.single else {}
    if config.multi:
        counts |= apportion(strata_weights(path_cfg, {"multi_turn": 1.0}), config.multi)
    return counts | {"irrelevance": config.irrelevance}


def load_or_build_graph(run_dir: Path, specs: list) -> Any:
    from graph.depgraph import build_graph, load_graph, save_graph

    cached = run_dir / GRAPH_FILE
    if cached.exists():
        return load_graph(cached)
    graph = build_graph(specs)
    save_graph(graph, cached)
    return graph


async def _generate(config: GenerateConfig, args: argparse.Namespace, build: Any = None) -> dict[str, Any]:
    """``build(spec) -> Teacher`` replaces make_teacher (`magnet improve` hands in clients of a server it
    already runs, named by the spec, so the run's fingerprint stays the spec's)."""
    from distill.data_card import data_card, token_counter
    from distill.pipeline import Distiller
    from distill.strata import StratifiedSource
    from engine import metrics
    from engine.scheduler import run_jobs
    from engine.store import RunStore, config_fingerprint
    from engine.teachers import make_teacher
    from graph.paths import PathSampler
    from graph.paths_config import path_config
    from graph.pool import tool_pool

    started = time.monotonic()
    metrics.reset_metrics()
    run_dir = Path(config.out)
    pool = tool_pool(config.toolkits or ["builtin"])
    counts = strata_targets(config)
    path_cfg = path_config(config.path_options, where="path_options")
    fingerprint = config_fingerprint(config.fingerprint_fields())
    # Teachers are built (checking specs, options and API keys; nothing connects yet) before the
    # store writes anything: a mistyped --teacher must not leave a manifest that refuses the fix.
    # The teachers handed in are clients of a server this process runs; Ray actors build theirs from the specs
    # (`magnet improve --ray` hands in none).
    assert not (config.ray and build is not None), "--ray: the actors build their teachers from the specs, none is handed in"
    build = build or (lambda spec: make_teacher(spec, **config.teacher_options))
    teacher = build(config.teacher)
    student = build(config.student) if config.student else None
    judge = build(config.judge) if config.judge else None
    author = build(config.author) if config.author else None
    teachers = [t for t in (teacher, student, judge, author) if t is not None]
    store = RunStore.open(run_dir, config_fingerprint=fingerprint, config=msgspec.to_builtins(config),
                          force=getattr(args, "force", False))
    leases = None  # engine.ray_leases.LeasePool with --ray
    try:
        graph = load_or_build_graph(run_dir, pool.specs())
        distiller = Distiller(pool, teacher, config, student=student, judge=judge, author=author)
        source = StratifiedSource(PathSampler(graph, pool.specs(), path_cfg), config.seed, counts, config.draw_factor,
                                  store.is_finished, config.stratum_patience)
        source.resume(*_stored_outcomes(run_dir, store.is_finished))
        source.repair(store.incomplete_items)

        if config.ray:
            from distill.ray_generate import start_pool

            leases = start_pool(config, distiller)
        job = source.tracked(leases.run if leases else distiller.run_path,
                             lambda records: any(r.polarity == "positive" for k, r in records if k == "trajectories"))

        total = sum(s.max_draws for s in source.strata.values())
        run = await run_jobs(source, job, store, item_id=lambda p: p.id, stage="generate",
                             max_in_flight=leases.capacity if leases else config.concurrency, total=total,
                             progress=getattr(args, "progress", True), item_payload=msgspec.to_builtins)
        summary = summarize(store, run_dir, run, distiller, config, time.monotonic() - started)
        if leases is not None:
            summary["ray"] = {**leases.stats(), "keys": await leases.key_limits()}
        summary["data_card"] = data_card(run_dir, counts, lengths=token_counter(config.card_tokenizer), strata=source.table())
        store.write_manifest({"generate": summary})
    finally:
        if leases is not None:
            await leases.close()
        for t in teachers:
            await t.aclose()
        store.close()
    write_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True))
    return summary


def _stored_outcomes(run_dir: Path, is_finished: Any) -> tuple[Iterator[str], Iterator[str], Iterator[tuple[str, str]]]:
    """What earlier runs of this folder finished: path ids, path ids with a stored positive, and
    (path id, stage) of the paths that died. A path whose marker outlived its records (a damaged
    shard) is not finished: the store has it run again. Streams, so a resume of 100M paths holds
    no list of them (a repeated marker is recognised by a compact ``IdSet``)."""
    from engine.id_index import IdSet
    from engine.store import read_records

    seen = IdSet()
    done = (m.id for m in read_records(run_dir, "done") if is_finished(m.id) and seen.add(m.id))

    def dead() -> Iterator[tuple[str, str]]:
        return ((dl.item_id, dl.stage) for dl in read_records(run_dir, "dead_letters") if "#" not in dl.item_id)

    positives = (t.episode_id.removeprefix("ep-") for t in read_records(run_dir, "trajectories") if t.polarity == "positive")
    return itertools.chain(done, (pid for pid, _ in dead())), positives, dead()


def summarize(store: Any, run_dir: Path, run: dict[str, Any], distiller: Any, config: GenerateConfig,
              wall_s: float) -> dict[str, Any]:
    from engine.store import read_records

    counts = store.counts()
    store.flush()
    reasons = Counter(f"{dl.stage}: {reason_key(dl.error)}" for dl in read_records(run_dir, "dead_letters"))
    spend = distiller.spend
    cost = run.get("cost_usd") or (spend.prompt_tokens * config.price_in + spend.completion_tokens * config.price_out) / 1e6
    done_paths = counts["done"]
    positives = sum(t.polarity == "positive" for t in read_records(run_dir, "trajectories"))  # what is stored
    return {
        "run_dir": str(run_dir), "teacher": distiller.teacher.name, "negatives": config.negative_mode,
        "paths_planned": run.get("total"), "paths_finished": done_paths + sum(v for k, v in reasons.items() if not k.startswith("negative")),
        "paths_this_run": run["done"] + run["failed"], "skipped_resumed": run["skipped"],
        "episodes": counts["episodes"], "positives": positives, "negatives_stored": counts["pairs"],
        "pairs": counts["pairs"], "dead_letters": counts["dead_letters"], "dead_letters_by_reason": dict(reasons.most_common()),
        "yield_positive": round(positives / max(1, positives + sum(v for k, v in reasons.items() if not k.startswith("negative"))), 4),
        "teacher_calls": spend.calls, "prompt_tokens": spend.prompt_tokens, "completion_tokens": spend.completion_tokens,
        "cost_usd_estimate": round(cost, 6), "wall_s": round(wall_s, 2), "interrupted": run.get("interrupted", False),
    }


def print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"magnet generate: {summary['run_dir']}", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [("teacher", summary["teacher"]), ("paths finished (this run)", f"{summary['paths_finished']} ({summary['paths_this_run']})"),
            ("skipped (resumed)", summary["skipped_resumed"]), ("episodes", summary["episodes"]),
            ("positives", summary["positives"]), ("negatives / pairs", summary["pairs"]),
            ("yield (paths -> positive)", f"{summary['yield_positive']:.1%}"), ("dead letters", summary["dead_letters"])]
    rows += [(f"  {reason}", n) for reason, n in summary["dead_letters_by_reason"].items()]
    rows += [("tokens in / out (this run)", f"{summary['prompt_tokens']:,} / {summary['completion_tokens']:,}"),
             ("teacher calls", summary["teacher_calls"]), ("estimated cost", f"${summary['cost_usd_estimate']:.4f}"),
             ("wall time", f"{summary['wall_s']:.1f} s")]
    for what, value in rows:
        table.add_row(what, str(value))
    Console().print(table)
    if "data_card" in summary:
        from distill.data_card import print_card

        print_card(summary["data_card"])


def generate_main(argv: list[str]) -> int:
    from engine.scheduler import run

    config, args = load_config(argv)
    summary = run(_generate(config, args))
    print_table(summary)
    print(f"summary: {Path(config.out) / SUMMARY_FILE}")
    return 130 if summary["interrupted"] else 0
