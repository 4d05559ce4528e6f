"""Issue 11, items 3-6, with real `magnet` subprocesses: damaged shards are reported and their
paths regenerated; bad manifests, unwritable export targets and a full disk give one line and
a non-zero exit; a mistyped teacher writes nothing; identical runs export identical bytes."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from engine.records import RECORD_KINDS
from engine.shards import FRAME_OVERHEAD, iter_frames, shard_files
from engine.store import MANIFEST, read_records

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = "generate_summary.json"


def magnet(*args: str, file_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:  # a full disk, for real: the kernel fails the write that crosses the limit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, preexec_fn=limit if file_limit else None)


def generate(run: Path, *extra: str, file_limit: int | None = None) -> subprocess.CompletedProcess:
    return magnet("generate", "--teacher", "sim", "--paths", "20", "--out", str(run), "--no-progress", *extra,
                  file_limit=file_limit)


def assert_one_line(result: subprocess.CompletedProcess, code: int, command: str, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith(f"magnet {command}: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def inspect(run: Path) -> dict:
    result = magnet("inspect", str(run), "--json", "--samples", "0")
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    result = generate(run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(read_records(run, "trajectories"))) >= 8, "the simulator run stored too few trajectories to damage"
    return run


def _ids(run: Path) -> dict[str, Counter]:
    return {kind: Counter(r.id for r in read_records(run, kind)) for kind in RECORD_KINDS}


def _assert_stored_once_and_counted(run: Path) -> None:
    """No id twice, every (last) done marker's records present, the summary counts what is stored."""
    after = _ids(run)
    for kind in RECORD_KINDS:
        if kind != "done":  # a regenerated path that made other records gets a second marker
            assert not [i for i, n in after[kind].items() if n > 1], f"{kind} holds an id twice"
    data = set().union(*(after[k] for k in RECORD_KINDS if k != "done"))
    last_marker = {m.id: m.outputs for m in read_records(run, "done")}
    incomplete = sorted(i for i, outputs in last_marker.items() if not set(outputs) <= data)
    report, summary = inspect(run), orjson.loads((run / SUMMARY).read_bytes())
    assert report["finished_missing_records"] == incomplete
    assert summary["positives"] == report["trajectories_by_polarity"]["positive"]
    for key in ("episodes", "pairs", "dead_letters"):
        assert summary[key] == report["kinds"][key]["records"], key


def _damage_and_resume(finished_run: Path, run: Path, damage: str) -> dict[str, Counter]:
    shutil.copytree(finished_run, run)
    before = _ids(run)
    path = shard_files(run / "trajectories")[0]
    offsets = [off for off, _ in iter_frames(path)]
    middle = offsets[len(offsets) // 2]
    with open(path, "r+b") as f:
        if damage == "truncate":
            f.truncate(middle + 5)
        else:  # the damaged frame stays in the file (shards are append-only); readers skip it
            f.seek(middle + FRAME_OVERHEAD + 20)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x01]))
    assert inspect(run)["finished_missing_records"], "inspect must show the finished paths that lost records"
    resumed = generate(run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "finished work items have records missing from the shards" in resumed.stderr
    assert "pending again and will be regenerated" in resumed.stderr
    return before


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_trajectory_shard_is_reported_and_the_summary_counts_what_is_stored(finished_run, tmp_path, damage):
    _damage_and_resume(finished_run, tmp_path / "run", damage)
    _assert_stored_once_and_counted(tmp_path / "run")


def test_every_path_that_lost_records_is_regenerated(finished_run, tmp_path):
    run = tmp_path / "run"
    before = _damage_and_resume(finished_run, run, "truncate")
    assert inspect(run)["finished_missing_records"] == []
    after = _ids(run)
    for kind in ("paths", "episodes", "done"):
        assert set(before[kind]) <= set(after[kind]), kind
    assert {i for i in before["trajectories"] if i.endswith("-pos")} <= set(after["trajectories"])


def test_a_manifest_holding_a_list_is_one_line_and_force_starts_over(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / MANIFEST).write_text("[]")
    for command, args in (("generate", ()), ("inspect", (str(run),)), ("requeue", (str(run),))):
        result = generate(run) if command == "generate" else magnet(command, *args)
        assert_one_line(result, 2, command, "manifest.json holds a JSON list, not a magnet manifest")
    assert (run / MANIFEST).read_text() == "[]", "a refused command must not touch the run"
    assert generate(run, "--force").returncode == 0
    assert isinstance(orjson.loads((run / MANIFEST).read_bytes()), dict)


def test_a_mistyped_teacher_writes_nothing(tmp_path):
    run = tmp_path / "run"
    result = magnet("generate", "--teacher", "opnai:gpt-4o", "--out", str(run), "--paths", "4", "--no-progress")
    assert_one_line(result, 2, "generate", "unknown backend 'opnai'")
    assert not run.exists()
    assert generate(run).returncode == 0  # the corrected command is not refused


def _make_read_only(folder: Path) -> None:
    """chmod for ordinary users; root ignores modes, so the immutable attribute as well."""
    folder.chmod(0o555)
    if os.access(folder, os.W_OK) and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    try:
        (folder / "probe").touch()
    except OSError:
        return
    (folder / "probe").unlink()
    pytest.fail(f"cannot make {folder} read-only here (neither chmod nor chattr +i holds)")


def test_export_to_a_read_only_folder_is_one_line(finished_run, tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    _make_read_only(target)
    try:
        result = magnet("export", str(finished_run), "--format", "openai", "--out", str(target / "sft.jsonl"))
        assert_one_line(result, 2, "export", f"cannot write the export to {target / 'sft.jsonl'}", "choose a writable --out")
        assert os.listdir(target) == []
    finally:
        subprocess.run(["chattr", "-i", str(target)], capture_output=True)
        target.chmod(0o755)


def test_export_onto_a_full_disk_is_one_line_and_leaves_no_partial_file(finished_run, tmp_path):
    out = tmp_path / "sft.jsonl"
    result = magnet("export", str(finished_run), "--format", "openai", "--polarity", "all", "--out", str(out), file_limit=4096)
    assert_one_line(result, 2, "export", "File too large")
    assert os.listdir(tmp_path) == []


def test_generate_onto_a_full_disk_ends_with_the_store_line_only(finished_run, tmp_path):
    graph = (finished_run / "graph.json.gz").stat().st_size
    limit = graph + 8192  # the graph cache and manifest fit; the shards outgrow it
    assert max(p.stat().st_size for k in RECORD_KINDS for p in shard_files(finished_run / k)) > limit
    run = tmp_path / "run"
    result = generate(run, file_limit=limit)
    line = assert_one_line(result, 2, "generate", f"cannot write to run directory {run}", "rerun the same command to resume")
    assert "Task exception was never retrieved" not in result.stderr
    assert "File too large" in line
    resumed = generate(run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert all(not [i for i, n in c.items() if n > 1] for c in _ids(run).values())


def test_two_identical_runs_export_identical_bytes(tmp_path):
    runs = [tmp_path / "first", tmp_path / "second"]
    for run in runs:
        assert generate(run, "--concurrency", "8").returncode == 0
    for kind, extra in (("trajectories", ("--polarity", "all")), ("pairs", ())):
        files = []
        for run in runs:
            out = tmp_path / f"{run.name}-{kind}.jsonl"
            assert magnet("export", str(run), "--format", "openai", "--kind", kind, *extra, "--out", str(out)).returncode == 0
            files.append(out.read_bytes())
        assert files[0] and files[0] == files[1], kind
