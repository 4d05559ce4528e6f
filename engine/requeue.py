"""`magnet requeue RUN_DIR [--stage S] [--match TEXT] [--dry-run]`: dead letters back to pending.

A dead letter is final on purpose: a resumed run skips its item. After the cause is fixed (a
better teacher, a bigger token limit, a fixed prompt), this command makes the chosen items
pending again, so the next `magnet generate` with the same settings runs them. The old letters
are not thrown away: they move to ``RUN_DIR/dead_letters_requeued/`` with the time of the
requeue (see ``RunStore.requeue_dead_letters``). Letters of items that finished otherwise (a
path that stored its positive but found no negative) cannot be requeued and are left alone.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Annotated

import msgspec

from engine.config_cli import ConfigCLI, doc
from engine.errors import UserInputError
from engine.records import DeadLetter
from engine.store import MANIFEST, REQUEUED, RunStore, read_manifest


def _stages(letters: list[DeadLetter]) -> str:
    return ", ".join(f"{stage} {n}" for stage, n in Counter(dl.stage for dl in letters).most_common())


def requeue(run_dir: Path, *, stages: list[str], match: str, dry_run: bool) -> list[DeadLetter]:
    """Requeue the dead letters of ``run_dir`` whose stage is in ``stages`` (all when empty) and
    whose error contains ``match`` (case-insensitive); return them."""
    manifest = read_manifest(run_dir)
    if manifest is None or "config_fingerprint" not in manifest:
        raise UserInputError(f"{run_dir} has no {MANIFEST} with a config fingerprint; pass the --out of a generate run")
    needle = match.lower()

    def chosen(dl: DeadLetter) -> bool:
        return (not stages or dl.stage in stages) and needle in dl.error.lower()

    with RunStore.open(run_dir, config_fingerprint=manifest["config_fingerprint"]) as store:
        letters = store.requeue_dead_letters(chosen, dry_run=dry_run)
        if not letters and (stages or match):
            present = store.requeue_dead_letters(lambda dl: True, dry_run=True)
            where = " ".join([*(f"--stage {s}" for s in stages), *([f"--match {match!r}"] if match else [])])
            raise UserInputError(f"no requeueable dead letter in {run_dir} matches {where}; "
                                 f"present: {_stages(present) or 'none'}")
    return letters


class RequeueConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Which dead letters `magnet requeue` makes pending again."""

    run_dir: Annotated[str, doc("a run directory (the --out of `magnet generate`)")]
    stage: Annotated[list[str], doc("only letters of these stages, e.g. translate")] = []
    match: Annotated[str, doc("only letters whose error contains this text (case-insensitive)")] = ""
    dry_run: Annotated[bool, doc("list what would be requeued, change nothing")] = False


REQUEUE_CLI = ConfigCLI(RequeueConfig, positional=("run_dir",), config_file=False)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="magnet requeue", description=__doc__.split("\n\n")[0])
    REQUEUE_CLI.add_arguments(parser)
    args = REQUEUE_CLI.load(parser.parse_args(argv))
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserInputError(f"run directory {run_dir} does not exist; pass the --out of a generate run")
    letters = requeue(run_dir, stages=args.stage, match=args.match, dry_run=args.dry_run)
    if not letters:
        print(f"{run_dir} has no dead letters to requeue; nothing changed")
    elif args.dry_run:
        print(f"would requeue {len(letters)} dead letters ({_stages(letters)}); nothing changed (--dry-run)")
    else:
        print(f"requeued {len(letters)} dead letters ({_stages(letters)}); the next `magnet generate` with the same "
              f"settings runs them again; their errors are kept in {run_dir / REQUEUED}")
    return 0
