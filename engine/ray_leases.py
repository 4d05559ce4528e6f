"""Driver side of Ray scale-out: lease blocks of work items to ``LeaseWorker`` actors.

Every command with ``--ray`` (`magnet generate`'s paths, `magnet eval paths`' episodes, the
stages of `magnet improve`) declares the same four fields (``RayAddress`` ...; ``RAY_FIELDS``)
and starts its actors through ``start_pool``; only the ``Work`` its actors build differs.

The scheduler (``engine.scheduler.run_jobs``) stays in the driver and calls ``LeasePool.run(item)``
as its job; the pool queues the item, and each actor's dispatcher takes up to ``block`` queued
items at a time (one lease, one Ray call) while the actor has fewer than ``concurrency`` items in
flight. Results stream back item by item, so one slow item in a lease holds up nothing, and the
driver commits every record through the one ``RunStore``: the run folder contract, resume and
"stored exactly once" are the single-process ones.

An actor that dies (its worker process killed, its node lost) fails its open leases; their
unfinished items go back to the front of the queue and another actor (or this one, restarted by
Ray) runs them. An item whose lease was lost ``MAX_LOSSES`` times is left pending as an outage
instead of being leased forever (a path that crashes every worker it touches).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from engine.config_cli import doc
from engine.errors import FatalTeacherError, JobFailed, RetryableError, UserInputError
from engine.ray_worker import Failure, LeaseWorker

MAX_LOSSES = 3

# The fields a config declares to offer --ray (as ``ray: RayAddress = ""`` and so on): one meaning and
# one help text for every command. Types, not a base struct, because msgspec allows one base with
# fields and EvalPathsConfig's is its TestsetSpec. None of them changes what a run stores.
RayAddress = Annotated[str, doc(
    "run the work items (paths, episodes) on Ray actors: a cluster address (HOST:PORT, or auto) or local (start a "
    "private one); empty = this process. The driver still decides what runs and is the only writer of the run folder")]
RayActors = Annotated[int, doc("Ray actors, each working on --concurrency items at once; 0 = one per ray_gpus GPUs when "
                               "ray_gpus > 0, else one per CPU of the cluster", ge=0)]
RayBlock = Annotated[int, doc("items leased to an actor per Ray call (results still come back item by item)", ge=1)]
RayGpus = Annotated[float, doc("GPUs each Ray actor reserves (1 = each actor runs its own local vLLM on its GPU)", ge=0)]
RAY_FIELDS = ("ray", "ray_actors", "ray_block", "ray_gpus")


class RayPlacement(Protocol):
    """A config with the ``RAY_FIELDS``."""

    ray: str
    ray_actors: int
    ray_block: int
    ray_gpus: float


class RemoteJobFailed(JobFailed):
    """A ``JobFailed`` raised in an actor; ``one_line`` is its dead letter's text as written there."""


class RemoteError(Exception):
    """Any other item failure in an actor (the scheduler's default stage applies)."""


class RemoteOutage(RetryableError):
    """The actor's teacher was unavailable through every retry: the item stays pending."""


def failure_to_exception(f: Failure) -> Exception:
    """An exception the scheduler treats exactly as it would have treated the actor's."""
    exc: Exception
    if f.kind == "refused":
        exc = FatalTeacherError(f.line, status=f.status)
    elif f.kind == "outage":
        exc = RemoteOutage(f.line, status=f.status)
    elif f.stage is not None:
        exc = RemoteJobFailed(f.line, stage=f.stage, attempts=f.attempts or 1)
    else:
        exc = RemoteError(f.line)
    exc.one_line = f.line  # type: ignore[attr-defined]  # read by engine.scheduler.one_line_error
    if f.attempts is not None:
        exc.attempts = f.attempts  # type: ignore[attr-defined]
    return exc


def connect(address: str) -> Any:
    """``ray.init`` once per process: ``local`` starts a private cluster, anything else is joined."""
    try:
        import ray
    except ImportError:
        raise UserInputError("--ray needs Ray: pip install 'magnet-engine[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 logging_level="WARNING", log_to_driver=True)
    return ray


class LeasePool:
    def __init__(self, factory: Callable[..., Any], args: tuple[Any, ...], *, actors: int, concurrency: int, block: int,
                 gpus: float = 0.0, on_counters: Callable[[dict[str, float]], None] = lambda _: None, keys: dict[str, Any] | None = None):
        """``keys``: spec -> its key's ``KeyLimiter`` actor, which the workers call: held, and ended, with the pool."""
        import ray
        from ray.exceptions import RayActorError

        if actors < 1 or concurrency < 1 or block < 1:
            raise UserInputError(f"Ray leases need actors, concurrency and block >= 1, got {actors}, {concurrency}, {block}")
        # Restarted by Ray after a crash (its calls in flight fail and are leased again here); no
        # task retries, so nothing re-runs behind the driver's back.
        remote = ray.remote(LeaseWorker).options(max_restarts=-1, max_task_retries=0, num_cpus=1, num_gpus=gpus)
        self.actors = [remote.remote(factory, *args) for _ in range(actors)]
        self.concurrency, self.block, self.on_counters = concurrency, block, on_counters
        self.keys = keys or {}
        self._lost_errors: tuple[type[BaseException], ...] = (RayActorError,)
        self._queue: collections.deque[tuple[Any, asyncio.Future[Any], int]] = collections.deque()
        self._wake = asyncio.Event()
        self._free = [concurrency] * actors
        self._leases: set[asyncio.Task[None]] = set()
        self._dispatchers = [asyncio.create_task(self._dispatch(a)) for a in range(actors)]
        self.leases = self.leases_lost = 0
        self.items_released = 0  # unfinished items of lost leases, leased again

    @property
    def capacity(self) -> int:
        return self.concurrency * len(self.actors)

    async def run(self, item: Any) -> list[tuple[str, Any]]:
        return await self._submit(item, 0)

    async def _submit(self, item: Any, losses: int) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future, losses))
        self._wake.set()
        return await future

    async def _dispatch(self, a: int) -> None:
        while True:
            while not (self._queue and self._free[a] > 0):
                self._wake.clear()
                await self._wake.wait()
            lease = []
            while self._queue and len(lease) < min(self.block, self._free[a]):
                entry = self._queue.popleft()
                if not entry[1].done():  # the scheduler cancelled it (SIGINT): nothing to run
                    lease.append(entry)
            self._free[a] -= len(lease)
            if lease:
                task = asyncio.create_task(self._lease(a, lease))
                self._leases.add(task)
                task.add_done_callback(self._leases.discard)

    async def _lease(self, a: int, lease: list[tuple[Any, asyncio.Future[Any], int]]) -> None:
        open_ = dict(enumerate(lease))
        requeued = False
        self.leases += 1
        try:
            stream = self.actors[a].run_lease.remote([item for item, _, _ in lease])
            async for ref in stream:
                i, outcome, counters = await ref
                _, future, _ = open_.pop(i)
                self._free[a] += 1
                self._wake.set()
                if counters:
                    self.on_counters(counters)
                if future.done():
                    continue
                if isinstance(outcome, Failure):
                    future.set_exception(failure_to_exception(outcome))
                else:
                    future.set_result(outcome)
        except self._lost_errors as err:
            self.leases_lost += 1
            # Back to the front, in lease order: the oldest work is re-run first.
            for item, future, losses in reversed(list(open_.values())):
                if future.done():
                    continue
                if losses + 1 >= MAX_LOSSES:
                    future.set_exception(RemoteOutage(f"the Ray actor running this item died {losses + 1} times (last: {err})"))
                else:
                    self._queue.appendleft((item, future, losses + 1))
                    self.items_released += 1
            requeued = True
        finally:
            self._free[a] += len(open_)
            for _, future, _ in open_.values():  # the stream ended without them: a bug, not a lost actor
                if not requeued and not future.done():
                    future.set_exception(RuntimeError("a Ray lease ended without reporting every item"))
            self._wake.set()

    def stats(self) -> dict[str, int]:
        return {"actors": len(self.actors), "leases": self.leases, "leases_lost": self.leases_lost, "items_released": self.items_released}

    async def key_limits(self) -> dict[str, Any]:
        """Spec -> what its key's limiter knows now (``Limiter.snapshot``: the limits configured or learned)."""
        try:
            snapshots = await asyncio.wait_for(asyncio.gather(*(key.snapshot.remote() for key in self.keys.values())), 30)
        except Exception as err:  # noqa: BLE001 - only a figure for the summary: a key actor lost at the end fails no run
            return {spec: f"unknown ({type(err).__name__})" for spec in self.keys}
        return dict(zip(self.keys, snapshots, strict=True))

    async def close(self) -> None:
        import ray

        for task in [*self._dispatchers, *self._leases]:
            task.cancel()
        await asyncio.gather(*self._dispatchers, *self._leases, return_exceptions=True)
        try:
            await asyncio.wait_for(asyncio.gather(*(actor.aclose.remote() for actor in self.actors), return_exceptions=True), 30)
        finally:
            for actor in [*self.actors, *self.keys.values()]:
                ray.kill(actor, no_restart=True)


def actor_count(ray: Any, placement: RayPlacement) -> int:
    """``ray_actors``, or when 0: one per ``ray_gpus`` GPUs when actors take GPUs, else one per CPU."""
    if placement.ray_actors:
        return placement.ray_actors
    resources = ray.cluster_resources()
    if placement.ray_gpus > 0:
        return max(1, int(resources.get("GPU", 0) // placement.ray_gpus))
    return max(1, int(resources.get("CPU", 1)))


def start_pool(placement: RayPlacement, factory: Callable[..., Any], args: tuple[Any, ...], *, concurrency: int, specs: list[str],
               options: dict[str, Any], spend: Any) -> LeasePool:
    """Join (or start) the Ray cluster and start the actors, each building ``factory(*args, keys, actors)``
    (``keys``: spec -> the ``KeyLimiter`` every HTTP endpoint's requests share, with the budgets ``options``
    configure or none; ``engine.ray_limit.actor_teacher`` builds a teacher with it). The actors' counters
    (``engine.ray_worker.work_counters``) feed this process's METRICS and ``spend``, so progress and the
    final figures cover every actor."""
    from engine import metrics
    from engine.ray_limit import KeyLimiter, key_budgets

    ray = connect(placement.ray)
    actors = actor_count(ray, placement)
    limiter = ray.remote(KeyLimiter).options(num_cpus=0, max_restarts=-1, max_task_retries=-1)
    keys = {spec: limiter.remote(**budgets) for spec in specs if (budgets := key_budgets(spec, options)) is not None}

    def add(delta: dict[str, float]) -> None:
        for key, value in delta.items():
            where, name = key.split(".", 1)
            target = metrics.METRICS if where == "m" else spend
            setattr(target, name, getattr(target, name) + value)

    return LeasePool(factory, (*args, keys, actors), actors=actors, concurrency=concurrency, block=placement.ray_block,
                     gpus=placement.ray_gpus, on_counters=add, keys=keys)
