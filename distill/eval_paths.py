"""`magnet eval paths`: a held-out, state-checked evaluation of any served model on any toolkit pool.

    magnet eval paths --model vllm:smollm2 --toolkits builtin --per-kind 20 --out runs/eval-smollm2
    magnet eval paths --model openai:gpt-4o-mini@https://api.openai.com/v1 --mode fc --testset runs/testset --out DIR
    magnet eval paths --model replay --toolkits bfcl --out DIR      # the references themselves: 100% by construction

Two stages, both run through the engine's scheduler (concurrent, resumable: rerun to continue):

1. Author the test set once (``--testset DIR``, default OUT/testset): signature paths of each
   stratum are drawn from seed 1,000,000 + --seed, a space disjoint from training runs (recorded
   in the test set's manifest and testset.json), and translated by ``--author`` (default sim)
   into episodes of queries and executed reference calls. A path the author cannot translate is
   replaced by the next one of its stratum, up to --draw-factor paths per episode wanted. A test
   set folder that exists is reused as it was authored: its settings come from its
   testset.json, and a flag that contradicts them is refused.
2. Run the model on every episode without hints, in prompt or FC mode, every call executed for
   real on a fresh toolkit; grade it (distill/eval_grade.py: final state per turn, reference
   outputs, no call where none is due, grounded values) and store the conversation with its
   grade. Then report.md and report.json: scores per path kind and per toolkit, failures with
   their first wrong step. With ``--ray ADDRESS`` the episodes are leased to Ray actors, each
   with its own client of the model built from --model (its own vLLM with --ray-gpus 1), through
   the machinery of `magnet generate --ray` (engine/ray_leases.py); this process skips what is
   stored, stores the rest and writes the report, so resuming is the same. The test set is
   authored here either way (the author is usually the simulator).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import msgspec

from distill.eval_config import TESTSET_SEED_OFFSET, EvalPathsConfig, TestsetSpec
from engine.config_cli import ConfigCLI
from engine.errors import UserInputError

TESTSET_FILE = "testset.json"
REPORT_JSON, REPORT_MD = "report.json", "report.md"
# A served SmolLM2 defaults to 2,048 tokens of context; prompt mode lists every offered function.
VLLM_DEFAULT_OPTIONS = {"max_model_len": 8192}


# Every option is an EvalPathsConfig field; a TOML file may hold them flat or under [eval_paths].
CONFIG = ConfigCLI(EvalPathsConfig, section="eval_paths")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magnet eval paths", description=__doc__.split("\n\n")[0])
    CONFIG.add_arguments(p)
    p.add_argument("--force", action="store_true", help="discard earlier results in --out made with other settings (never the test set)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no live progress line")
    return p


def load_config(argv: list[str]) -> tuple[EvalPathsConfig, set[str], argparse.Namespace]:
    """The config, and the names of the fields the user set (a reused test set checks them)."""
    args = _parser().parse_args(argv)
    data = CONFIG.values(args)
    return CONFIG.convert(data), set(data), args


def fingerprint(fields: dict[str, Any]) -> str:
    """A config fingerprint over (name, value) pairs: engine.store.redact drops dict keys that look
    secret, and ``max_tokens`` looks so, yet it changes the results."""
    from engine.store import config_fingerprint

    return config_fingerprint({"fields": [[k, fields[k]] for k in sorted(fields)]})


def teacher_kwargs(options: dict[str, Any], spec: str, **defaults: Any) -> dict[str, Any]:
    """``make_teacher`` overrides: TeacherConfig fields as they are, an ``options`` table and anything else backend options."""
    from engine.teachers import TeacherConfig

    backend = dict(VLLM_DEFAULT_OPTIONS) if spec.startswith("vllm:") else {}
    fields = {k: v for k, v in options.items() if k in TeacherConfig.__struct_fields__ and k != "options"}
    backend |= options.get("options", {}) | {k: v for k, v in options.items() if k not in fields and k != "options"}
    return defaults | fields | ({"options": backend} if backend else {})


def model_kwargs(config: EvalPathsConfig, spec: str) -> dict[str, Any]:
    """``make_teacher`` overrides of the model under test. A truncated or garbled answer is the model's answer:
    the backend never re-asks."""
    return teacher_kwargs(config.teacher_options, spec, max_bad_answer_retries=0)


# -- stage 1: the test set ----------------------------------------------------------------------------


def resolve_testset(config: EvalPathsConfig, given: set[str]) -> tuple[TestsetSpec, Path]:
    """The test set folder and its spec: as stored when it exists (flags must agree), else the flags'."""
    folder = Path(config.testset).expanduser() if config.testset else Path(config.out).expanduser() / "testset"
    spec = config.testset_spec()
    stored_file = folder / TESTSET_FILE
    if not stored_file.exists():
        return spec, folder
    try:
        stored = msgspec.convert(json.loads(stored_file.read_text())["spec"], TestsetSpec)
    except (ValueError, KeyError, msgspec.ValidationError) as err:
        raise UserInputError(f"{stored_file} is not a test set description ({err}); restore it or give a new --testset") from None
    for name in sorted(given & set(TestsetSpec.__struct_fields__)):
        if getattr(spec, name) != getattr(stored, name):
            raise UserInputError(f"--{name.replace('_', '-')}: the test set {folder} was authored with {getattr(stored, name)!r}; "
                                 "drop the flag to reuse it, or give a new --testset folder")
    return stored, folder


def _authored(folder: Path, is_finished: Any) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """What earlier runs of the test set finished: path ids, path ids with an episode, and deaths."""
    from engine.store import read_records

    done = [m.id for m in read_records(folder, "done") if is_finished(m.id)]
    dead = [(dl.item_id, dl.stage) for dl in read_records(folder, "dead_letters")]
    return done + [pid for pid, _ in dead], [e.path_id for e in read_records(folder, "episodes")], dead


async def author_testset(spec: TestsetSpec, folder: Path, pool: Any, author: Any, config: EvalPathsConfig,
                         progress: bool) -> dict[str, Any]:
    """Translate paths into episodes until every stratum holds ``per_kind`` (or ran out of draws).
    ``author`` is asked nothing when the test set is complete."""
    from distill.cli import load_or_build_graph
    from distill.generate_config import GenerateConfig
    from distill.prompts import Prompts
    from distill.spend import Spend
    from distill.strata import StratifiedSource
    from distill.translate import Translator
    from distill.verify import canonical, replay_reference
    from engine.errors import JobFailed
    from engine.scheduler import run_jobs
    from engine.store import RunStore, write_json_atomic
    from graph.paths import PathSampler
    from graph.paths_config import path_config

    store = RunStore.open(folder, config_fingerprint=fingerprint(msgspec.to_builtins(spec)), config=msgspec.to_builtins(spec))
    seed_space = {"seed_offset": TESTSET_SEED_OFFSET, "path_seed": spec.path_seed}
    try:
        if not (folder / TESTSET_FILE).exists():
            write_json_atomic(folder / TESTSET_FILE, {"spec": msgspec.to_builtins(spec), **seed_space})
        graph = load_or_build_graph(folder, pool.specs())
        sampler = PathSampler(graph, pool.specs(), path_config(spec.path_options, where="--path-option"))
        source = StratifiedSource(sampler, spec.path_seed, {k: spec.per_kind for k in spec.kinds}, spec.draw_factor,
                                  store.is_finished)
        source.resume(*_authored(folder, store.is_finished))
        run: dict[str, Any] = {"done": 0, "failed": 0, "skipped": 0}
        if any(s.wants_more() for s in source.strata.values()):
            translator = Translator(author, pool, Prompts(None), GenerateConfig(
                teacher=spec.author, seed=spec.seed, translate_attempts=spec.translate_attempts,
                structured_outputs=spec.structured_outputs, max_tokens=spec.author_max_tokens))

            async def author_one(path: Any) -> list[tuple[str, Any]]:
                episode = await translator.translate(path, Spend())
                # A benchmark needs references that replay identically: the state checks compare against them.
                replayed = replay_reference(pool, episode)
                if any(canonical(r.outputs) != canonical(t.outputs) for r, t in zip(replayed, episode.turns)):
                    raise JobFailed("reference calls give other outputs on replay (a nondeterministic toolkit)", stage="reference")
                return [("paths", path), ("episodes", episode)]

            job = source.tracked(author_one, lambda _records: True)

            run = await run_jobs(source, job, store, item_id=lambda p: p.id, stage="author", max_in_flight=config.concurrency,
                                 total=sum(s.max_draws for s in source.strata.values()), progress=progress,
                                 item_payload=msgspec.to_builtins)
        store.write_manifest({"eval_testset": {**seed_space, "author": spec.author, "strata": source.table()}})
    finally:
        store.close()
    return run


# -- stage 2: the model under test --------------------------------------------------------------------


def testset_episodes(folder: Path, spec: TestsetSpec) -> list[Any]:
    """The first ``per_kind`` episodes of each stratum in path-index order. A stratum may hold more
    (paths in flight when it filled up), and which ones depends on timing; the first successes by
    index do not, so every model meets the same episodes whatever the authoring concurrency."""
    from distill.strata import stratum_of_id
    from engine.store import read_records_by_id

    taken: dict[str, int] = {}
    out = []
    for episode in read_records_by_id(folder, "episodes"):
        kind = stratum_of_id(episode.path_id)
        if kind in spec.kinds and taken.get(kind, 0) < spec.per_kind:
            taken[kind] = taken.get(kind, 0) + 1
            out.append(episode)
    return out


class EpisodeEval:
    """One episode -> its graded conversation, the records to store. The same object runs the episodes in
    this process and, built by ``actor_eval``, in each Ray actor (an ``engine.ray_worker.Work``)."""

    def __init__(self, config: EvalPathsConfig, pool: Any, model: Any):
        from distill.rollout import RolloutParams
        from distill.spend import Spend

        self.config, self.pool, self.model = config, pool, model
        self.params = RolloutParams(mode=config.mode, seed=config.seed, temperature=config.temperature, max_tokens=config.max_tokens,
                                    max_steps=config.max_steps_per_turn, answer_retries=config.answer_retries)
        self.spend = Spend()

    async def run(self, episode: Any) -> list[tuple[str, Any]]:
        from distill.eval_grade import grade
        from distill.parsers import parse_message
        from distill.rollout import roll_out
        from distill.verify import replay_reference
        from engine.records import Trajectory

        reference = replay_reference(self.pool, episode)
        rollout = await roll_out(self.model, episode, self.pool, None, self.params, parse_message)
        self.spend.absorb(rollout.spend)
        g = grade(rollout, episode, reference)
        return [("trajectories", Trajectory(
            id=episode.id, episode_id=episode.id, polarity="positive" if g.passed else "negative", tools=rollout.tools,
            turn_tools=rollout.turn_tools, messages=rollout.messages, teacher=self.model.name, hints=rollout.hints,
            source=f"eval:{self.config.mode}", error_types=[] if g.passed else [g.reason], verification=g.verification(rollout),
            usage=rollout.spend.as_dict()))]

    def counters(self) -> dict[str, float]:
        from engine.ray_worker import work_counters

        return work_counters(self.spend)

    async def aclose(self) -> None:
        await self.model.aclose()


def actor_eval(config_data: dict[str, Any], toolkits: list[str], replay: list[Any] | None, keys: dict[str, Any],
               actors: int) -> EpisodeEval:
    """Built inside each Ray actor: its own tool pool and its own client of the model under test, made from the
    spec as this process makes it (``replay``: the test set's episodes when the model is the reference replay)."""
    from distill.eval_replay import ReplayModel
    from engine.ray_limit import actor_teacher
    from graph.pool import tool_pool

    config = msgspec.convert(config_data, EvalPathsConfig)
    model = ReplayModel(replay) if replay is not None else actor_teacher(config.model, model_kwargs(config, config.model), keys, actors)
    return EpisodeEval(config, tool_pool(toolkits), model)


async def evaluate(config: EvalPathsConfig, spec: TestsetSpec, folder: Path, pool: Any, model: Any, store: Any, *,
                   progress: bool) -> dict[str, Any]:
    """Every episode of the test set through ``model`` (None = the replay of the references), graded and stored.
    With ``config.ray`` Ray actors run the episodes, each with a model of its own built from ``config.model``
    (``model`` then only stands for it here); this process still skips what is stored and stores the rest."""
    from distill.eval_replay import ReplayModel
    from engine.scheduler import run_jobs

    episodes = testset_episodes(folder, spec)
    if not episodes:
        raise UserInputError(f"test set {folder} holds no episodes (the author translated no path); "
                             f"see why with `magnet inspect {folder}`, then try another --author or --toolkits")
    work = EpisodeEval(config, pool, model or ReplayModel(episodes))
    leases = None  # engine.ray_leases.LeasePool with --ray
    started = time.monotonic()
    try:
        if config.ray:
            from engine.ray_leases import start_pool

            replay = episodes if model is None else None
            leases = start_pool(config, actor_eval, (msgspec.to_builtins(config), spec.toolkits, replay), concurrency=config.concurrency,
                                specs=[] if model is None else [config.model], options=model_kwargs(config, config.model), spend=work.spend)
        run = await run_jobs(episodes, leases.run if leases else work.run, store, item_id=lambda e: e.id, stage="eval",
                             max_in_flight=leases.capacity if leases else config.concurrency, total=len(episodes), progress=progress)
    finally:
        if leases is not None:
            await leases.close()
        await work.aclose()
    report = write_report(config, spec, folder, episodes, store.run_dir, run, work.spend, time.monotonic() - started)
    ray = {"ray": leases.stats()} if leases is not None else {}
    store.write_manifest({"eval_paths": {"overall": report["overall"], "testset": str(folder), **ray}})
    return report


def write_report(config: EvalPathsConfig, spec: TestsetSpec, folder: Path, episodes: list[Any], out: Path,
                 run: dict[str, Any], spend: Any, wall_s: float) -> dict[str, Any]:
    from distill.eval_report import build_report, episode_row, to_markdown
    from distill.strata import stratum_of_id
    from engine.atomic import write_atomic
    from engine.store import read_records, write_json_atomic

    results: dict[str, Any] = {t.episode_id: t for t in read_records(out, "trajectories")}
    results |= {d.item_id: d for d in read_records(out, "dead_letters")}
    rows = [episode_row(e, results[e.id]) for e in episodes if e.id in results]
    counts = {k: sum(stratum_of_id(e.path_id) == k for e in episodes) for k in spec.kinds}
    meta = {"model": config.model, "mode": config.mode, "testset": str(folder), "author": spec.author,
            "toolkits": spec.toolkits, "seed_offset": TESTSET_SEED_OFFSET, "path_seed": spec.path_seed,
            "episodes": len(episodes), "pending": len(episodes) - len(rows), "per_kind": spec.per_kind,
            "short_kinds": {k: n for k, n in counts.items() if n < spec.per_kind},
            "this_run": {"evaluated": run["done"] + run["failed"], "skipped_resumed": run["skipped"],
                         "interrupted": run.get("interrupted", False), "prompt_tokens": spend.prompt_tokens,
                         "completion_tokens": spend.completion_tokens, "wall_s": round(wall_s, 2)}}
    report = build_report(rows, meta)
    write_json_atomic(out / REPORT_JSON, report)
    write_atomic(out / REPORT_MD, to_markdown(report))
    return report


async def _eval(config: EvalPathsConfig, given: set[str], args: argparse.Namespace, build: Any = None) -> dict[str, Any]:
    """``build(spec) -> Teacher`` replaces make_teacher for the model under test (`magnet improve` hands in a
    client of the server it already runs, named by the stable spec the fingerprint holds)."""
    from engine.store import RunStore
    from engine.teachers import make_teacher
    from graph.pool import tool_pool

    spec, folder = resolve_testset(config, given)
    pool = tool_pool(spec.toolkits)
    progress = getattr(args, "progress", True)
    # Built (specs checked; nothing connects yet) before anything is written: a mistyped --model or --author
    # leaves no trace. With --ray the model built here only stands for the actors' own (see evaluate).
    assert not (config.ray and build is not None), "--ray: the actors build the model from its spec, none is handed in"
    author = make_teacher(spec.author, **teacher_kwargs(config.teacher_options, spec.author))
    build = build or (lambda spec: make_teacher(spec, **model_kwargs(config, spec)))
    model = None if config.model == "replay" else build(config.model)
    # The results folder is opened first: the default test set lives inside it.
    store = RunStore.open(Path(config.out).expanduser(), force=getattr(args, "force", False),
                          config_fingerprint=fingerprint({"testset": fingerprint(msgspec.to_builtins(spec)), **config.run_fields()}),
                          config=msgspec.to_builtins(config))
    try:
        try:
            authored = await author_testset(spec, folder, pool, author, config, progress)
        finally:
            await author.aclose()
        if authored.get("interrupted"):
            if model is not None:
                await model.aclose()
            return {"interrupted": True}
        return await evaluate(config, spec, folder, pool, model, store, progress=progress)
    finally:
        store.close()


def main(argv: list[str]) -> int:
    from engine.scheduler import run

    config, given, args = load_config(argv)
    report = run(_eval(config, given, args))
    if report.get("interrupted"):
        print("magnet eval paths: interrupted while authoring the test set; rerun the same command to resume")
        return 130
    from distill.eval_report import pct

    o = report["overall"]
    kinds = ", ".join(f"{k} {pct(s['accuracy'])}" for k, s in report["by_kind"].items())
    print(f"{report['model']} ({report['mode']}): {o['passed']}/{o['n']} passed, accuracy {pct(o['accuracy'])} "
          f"(macro {pct(o['accuracy_macro'])}); {kinds}")
    print(f"report: {Path(config.out) / REPORT_MD}")
    return 130 if report["this_run"]["interrupted"] else 0
