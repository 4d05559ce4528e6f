"""Requeueing dead letters on purpose (issue 11, item 2): the chosen items become pending, the
old letters are kept in dead_letters_requeued/, and a requeue killed at any point (-9, a real
process) leaves the run consistent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import _records_factory as F
import msgspec
import orjson
import pytest

from engine.records import DeadLetter
from engine.shards import iter_folder, shard_files
from engine.store import REQUEUED, RequeuedLetter, RunStore, read_records

FP = "requeue-test"
ROOT = Path(__file__).resolve().parents[1]


def _letter(i: int, stage: str) -> DeadLetter:
    return DeadLetter(id=f"it-{i}", item_id=f"it-{i}", stage=stage, error=f"{stage} failed for {i}", item={"i": i})


def _make_run(run: Path) -> None:
    """it-0..9: dead letters (even: translate, odd: verify); it-10: finished with a negative-step letter."""
    with RunStore.open(run, config_fingerprint=FP, config={"teacher": "sim"}) as store:
        for i in range(10):
            store.dead_letter(_letter(i, "translate" if i % 2 == 0 else "verify"))
        store.commit("it-10", [("paths", F.path(10)),
                               ("dead_letters", DeadLetter(id="dl-it-10-negative", item_id="it-10#negative",
                                                           stage="negative", error="no perturbation applies"))])


def _history(run: Path) -> list[RequeuedLetter]:
    decode = msgspec.msgpack.Decoder(RequeuedLetter).decode
    return [decode(p) for p in iter_folder(run / REQUEUED)]


def test_requeue_makes_items_pending_and_keeps_the_old_letters(tmp_path):
    run = tmp_path / "run"
    _make_run(run)
    with RunStore.open(run, config_fingerprint=FP) as store:
        chosen = store.requeue_dead_letters(lambda dl: dl.stage == "translate")
        assert [dl.item_id for dl in chosen] == [f"it-{i}" for i in range(0, 10, 2)]
        assert [i for i in range(11) if not store.is_finished(f"it-{i}")] == [0, 2, 4, 6, 8]
        assert store.counts()["dead_letters"] == 6
        # The rerun fails again the same way: a new letter under the same id is stored, not refused.
        store.dead_letter(_letter(0, "translate"))
        assert store.is_finished("it-0")
    kept = sorted(dl.id for dl in read_records(run, "dead_letters"))
    assert kept == sorted(["it-0", "it-1", "it-3", "it-5", "it-7", "it-9", "dl-it-10-negative"])
    history = _history(run)
    assert [h.dead_letter.item_id for h in history] == [f"it-{i}" for i in range(0, 10, 2)]
    assert history[0].dead_letter.error == "translate failed for 0" and history[0].requeued_at
    with RunStore.open(run, config_fingerprint=FP) as store:  # the requeue survives a reopen
        assert [i for i in range(11) if not store.is_finished(f"it-{i}")] == [2, 4, 6, 8]
        # A finished path's negative-step letter is never requeued: it would make nothing pending.
        assert all(dl.stage != "negative" for dl in store.requeue_dead_letters(lambda dl: True, dry_run=True))
    manifest = orjson.loads((run / "manifest.json").read_bytes())
    assert manifest["config"] == {"teacher": "sim"}, "opening without a config must keep the run's config"
    assert manifest["counts"]["dead_letters"] == 7


_CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from engine import shards
    from engine.store import RunStore
    real_rename, calls = os.rename, []
    def rename(src, dst):
        calls.append(src)
        if len(calls) == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)
        real_rename(src, dst)
    shards.os.rename = rename
    with RunStore.open(sys.argv[1], config_fingerprint="requeue-test") as store:
        store.requeue_dead_letters(lambda dl: dl.stage == "verify")
""")


@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_a_requeue_killed_at_each_rename_leaves_a_consistent_run(tmp_path, kill_at):
    """kill_at 1: before the new folder is complete; 2: before the old one moves aside; 3: between."""
    run = tmp_path / "run"
    _make_run(run)
    child = subprocess.run([sys.executable, "-c", _CHILD.format(root=str(ROOT), kill_at=kill_at), str(run)],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    odd = [f"it-{i}" for i in range(1, 10, 2)]
    with RunStore.open(run, config_fingerprint=FP) as store:  # the open completes or undoes the swap
        pending = [f"it-{i}" for i in range(11) if not store.is_finished(f"it-{i}")]
        assert pending == ([] if kill_at == 1 else odd)
        store.requeue_dead_letters(lambda dl: dl.stage == "verify")  # the user runs it again
        assert [f"it-{i}" for i in range(11) if not store.is_finished(f"it-{i}")] == odd
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("dead_letters")) == ["dead_letters", REQUEUED]
    assert sorted(h.dead_letter.item_id for h in _history(run)) == odd  # once each, however often it ran
    assert sorted(dl.item_id for dl in read_records(run, "dead_letters")) == sorted(
        [f"it-{i}" for i in range(0, 10, 2)] + ["it-10#negative"])
    assert len(shard_files(run / "dead_letters")) == 1


def _magnet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_requeue_command(tmp_path):
    run = tmp_path / "run"
    _make_run(run)
    dry = _magnet("requeue", str(run), "--stage", "verify", "--dry-run")
    assert dry.returncode == 0 and "would requeue 5 dead letters (verify 5); nothing changed" in dry.stdout
    with RunStore.open(run, config_fingerprint=FP) as store:
        assert all(store.is_finished(f"it-{i}") for i in range(11))

    done = _magnet("requeue", str(run), "--stage", "verify", "--match", "FAILED FOR")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("requeued 5 dead letters (verify 5); the next `magnet generate`")

    typo = _magnet("requeue", str(run), "--stage", "verfy")
    assert typo.returncode == 2 and typo.stdout == ""
    assert typo.stderr.strip() == (f"magnet requeue: error: no requeueable dead letter in {run} matches --stage verfy; "
                                   "present: translate 5")
    missing = _magnet("requeue", str(tmp_path / "nope"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1 and "does not exist" in missing.stderr
    os.makedirs(tmp_path / "empty")
    not_run = _magnet("requeue", str(tmp_path / "empty"))
    assert not_run.returncode == 2 and "has no manifest.json" in not_run.stderr and "Traceback" not in not_run.stderr
