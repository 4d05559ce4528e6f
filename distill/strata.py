"""Stratified path drawing: the STORED positives follow the mixture, not the sampled paths.

Paths of different strata die at very different rates (an irrelevance turn passes almost
always, a long multi-turn conversation rarely), so sampling at the mixture and filtering
leaves a run dominated by the easy strata. Here each stratum (a path kind; for multi-turn,
each variant: base, nested, long, miss_func, miss_param) has a target count of stored
positives, and the source keeps drawing paths of a stratum while its stored positives plus
its in-flight paths times its yield so far fall short of the target, up to ``draw_factor``
times the target. No barriers: the source is asked for a path whenever a slot frees up, and
waits only when every unfilled stratum already has enough in flight. With a patience, a stratum
whose paths failed verification that many times while none was stored is closed early.

Path j of stratum s is ``PathSampler.path(s, seed, j)`` (its id names s and j), so a resumed
run walks the same ids, skips those already finished and starts with the counts stored.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import msgspec

from engine.errors import JobFailed
from engine.records import SignaturePath
from graph.paths import PathSampler
from graph.paths_config import KINDS, MULTI_TURN_VARIANTS, PathConfig

Job = Callable[[SignaturePath], Awaitable[list[tuple[str, Any]]]]


def strata_weights(config: PathConfig, kinds: dict[str, float]) -> dict[str, float]:
    """Stratum -> weight: each kind's weight, multi_turn's split over its variants' shares."""
    shares = {v: config.multi_turn_mixture.get(v, 0.0) for v in MULTI_TURN_VARIANTS}
    total = sum(shares.values())
    out: dict[str, float] = {}
    for kind in KINDS:
        w = kinds.get(kind, 0.0)
        if w <= 0:
            continue
        if kind == "multi_turn":
            out.update({f"multi_turn.{v}": w * s / total for v, s in shares.items() if s > 0})
        else:
            out[kind] = w
    return out


def stratum_of_id(path_id: str) -> str:
    """``multi_turn.long-0-12`` -> ``multi_turn.long`` (ids are ``<stratum>-<seed>-<index>``)."""
    return path_id.rsplit("-", 2)[0]


class Stratum(msgspec.Struct, kw_only=True):
    name: str
    target: int
    max_draws: int
    drawn: int = 0  # paths started, this run and earlier ones
    stored: int = 0  # positives stored
    in_flight: int = 0
    died: dict[str, int] = {}  # stage -> paths that ended there without a positive
    next_index: int = 0
    patience: int = 0  # verification failures with nothing stored that close the stratum; 0 = never

    def hopeless(self) -> bool:
        """The teacher failed this kind ``patience`` times and never once passed: drawing more only spends
        calls (a small model as its own teacher on multi-turn paths). Counted from stored records, so a
        resumed run closes the same strata."""
        return self.patience > 0 and self.stored == 0 and self.died.get("verify", 0) >= self.patience

    @property
    def finished(self) -> int:
        return self.drawn - self.in_flight

    def yield_estimate(self) -> float:
        """Stored per finished path, with one success and one failure assumed (Laplace): a stratum
        with no history is neither starved nor flooded."""
        return (self.stored + 1) / (self.finished + 2)

    def wants_more(self) -> bool:
        expected = self.stored + self.in_flight * self.yield_estimate()
        return self.drawn < self.max_draws and expected < self.target and not self.hopeless()

    def row(self) -> dict[str, Any]:
        """The stratum's line in the data card: target, stored, draws and where paths died."""
        return {"target": self.target, "stored": self.stored, "drawn": self.drawn, "max_draws": self.max_draws,
                "yield": round(self.stored / self.finished, 4) if self.finished else None,
                "died": dict(self.died), "filled": self.stored >= self.target, "hopeless": self.hopeless()}


class StratifiedSource:
    """An async stream of paths that tops up each stratum until its target is stored."""

    def __init__(self, sampler: PathSampler, seed: int, counts: dict[str, int], draw_factor: float,
                 is_finished: Callable[[str], bool], patience: int = 0):
        self.sampler, self.seed, self.is_finished = sampler, seed, is_finished
        self.strata = {s: Stratum(name=s, target=n, max_draws=math.ceil(draw_factor * n), patience=patience)
                       for s, n in counts.items() if n > 0}
        self._changed = asyncio.Event()
        self._repairs: list[SignaturePath] = []
        self._repaired: set[str] = set()

    def repair(self, path_ids: list[str]) -> None:
        """Paths marked finished whose records a damaged shard lost: drawn again first, whatever
        their stratum's count says (their outcome was counted from records that are gone)."""
        for pid in path_ids:
            stratum, seed, index = pid.rsplit("-", 2)
            if stratum in self.strata and seed == str(self.seed) and index.isdigit():
                self._repairs.append(self.sampler.path(stratum, self.seed, int(index)))
                self._repaired.add(pid)

    def resume(self, finished_ids: Iterable[str], positive_path_ids: Iterable[str], deaths: Iterable[tuple[str, str]]) -> None:
        """Counts from earlier runs: finished paths, stored positives, and (path id, stage) of deaths
        (each read once, in this order: they may be streams)."""
        for pid in finished_ids:
            if (s := self.strata.get(stratum_of_id(pid))) is not None:
                s.drawn += 1
        for pid in positive_path_ids:
            if (s := self.strata.get(stratum_of_id(pid))) is not None:
                s.stored += 1
        for pid, stage in deaths:
            if (s := self.strata.get(stratum_of_id(pid))) is not None:
                s.died[stage] = s.died.get(stage, 0) + 1

    def _pick(self) -> Stratum | None:
        """The unfilled stratum furthest below its target, relative to the target."""
        open_ = [s for s in self.strata.values() if s.wants_more()]
        if not open_:
            return None
        return max(open_, key=lambda s: (s.target - s.stored - s.in_flight * s.yield_estimate()) / s.target)

    async def __aiter__(self) -> AsyncIterator[SignaturePath]:
        for path in self._repairs:
            self.strata[stratum_of_id(path.id)].drawn += 1
            self.strata[stratum_of_id(path.id)].in_flight += 1
            yield path
        while True:
            stratum = self._pick()
            if stratum is None:
                if not any(s.in_flight for s in self.strata.values()):
                    return
                self._changed.clear()
                await self._changed.wait()
                continue
            path = self.sampler.path(stratum.name, self.seed, stratum.next_index)
            stratum.next_index += 1
            if self.is_finished(path.id) or path.id in self._repaired:
                continue  # counted by resume(), or drawn again first by repair()
            stratum.drawn += 1
            stratum.in_flight += 1
            yield path

    def settle(self, path: SignaturePath, stored_positive: bool, died_at: str | None) -> None:
        """A path ended (a positive stored, or died at a stage, or was left pending)."""
        s = self.strata[stratum_of_id(path.id)]
        s.in_flight -= 1
        if stored_positive:
            s.stored += 1
        elif died_at is not None:
            s.died[died_at] = s.died.get(died_at, 0) + 1
        self._changed.set()

    def tracked(self, job: Job, stored_positive: Callable[[list[tuple[str, Any]]], bool]) -> Job:
        """``job`` with its outcome reported to the source (``stored_positive(records)`` says whether
        it counts towards its stratum); the scheduler runs the wrapped job."""
        async def run(path: SignaturePath) -> list[tuple[str, Any]]:
            try:
                records = await job(path)
            except JobFailed as err:
                self.settle(path, False, err.stage)
                raise
            except BaseException:
                self.settle(path, False, None)
                raise
            self.settle(path, stored_positive(records), None)
            return records

        return run

    def table(self) -> dict[str, dict[str, Any]]:
        return {name: s.row() for name, s in self.strata.items()}
