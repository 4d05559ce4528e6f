"""Random-init Qwen2 checkpoints with a tool-capable chat template, built offline in a second.

Tests need a real model that trains, reloads, generates and that vLLM can serve; a hub
download is impossible here, so we train a small byte-level BPE on synthetic chat text and
initialise a Qwen2 from a seed. head_dim is 64 because vLLM's CPU attention rejects 16.
The ``large`` preset is for GPU benchmarks (about 0.5B parameters with a big vocabulary).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# Qwen2.5's tool template (hermes-style <tool_call> JSON), so vLLM's `hermes` parser reads the
# model's calls and every rendered conversation prefix is a token prefix of the whole.
TOOL_CHAT_TEMPLATE = r"""{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
{{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
{%- for tool in tools %}{{- "\n" }}{{- tool | tojson }}{%- endfor %}
{{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{%- endif %}
{%- endif %}
{%- for message in messages %}
{%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
{{- '<|im_start|>' + message.role + '\n' + (message.content or '') + '<|im_end|>' + '\n' }}
{%- elif message.role == "assistant" %}
{{- '<|im_start|>' + message.role }}
{%- if message.content %}{{- '\n' + message.content }}{%- endif %}
{%- for tool_call in message.tool_calls %}
{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
{{- '\n<tool_call>\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}
{%- if tool_call.arguments is string %}{{- tool_call.arguments }}{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}
{{- '}\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- elif message.role == "tool" %}
{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\n<tool_response>\n' }}{{- message.content }}{{- '\n</tool_response>' }}
{%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}{{- '<|im_end|>\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
"""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Tags the template writes as text; single tokens keep tool calls short and easy to parse.
ADDED_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<tools>", "</tools>"]

PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=64),
    "large": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24, num_attention_heads=16,
                  num_key_value_heads=4, head_dim=64),
    # Qwen2.5-0.5B / -1.5B shapes with their 152k vocabulary (logits memory as in the real models), for GPU checks
    "qwen2-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, head_dim=64, vocab_size=151936),
    "qwen2-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                       num_key_value_heads=2, head_dim=128, vocab_size=151936),
}


def _corpus(seed: int, n: int = 400) -> list[str]:
    """Chat-shaped synthetic text so the BPE learns JSON, tags and common words."""
    rng = random.Random(seed)
    words = ("get weather city date flight book hotel search order cancel user account balance file read "
             "write list create delete update name value id price time location result error status the a "
             "to of and in is for please find me what how many send message email calendar event").split()
    out = []
    for _ in range(n):
        args = {rng.choice(words): rng.choice([rng.choice(words), rng.randint(0, 999), rng.random() < 0.5])
                for _ in range(rng.randint(1, 3))}
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        out.append(f"<|im_start|>user\n{sentence.capitalize()}?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n"
                   f'{{"name": "{rng.choice(words)}_{rng.choice(words)}", "arguments": {json.dumps(args)}}}\n'
                   f"</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{json.dumps(args)}\n"
                   f"</tool_response><|im_end|>\n<|im_start|>assistant\n{sentence}.<|im_end|>\n")
    return out


def build_tokenizer(seed: int = 0, vocab_size: int = 1024, chat_template: str = TOOL_CHAT_TEMPLATE):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, bos_token=None)
    fast.add_tokens(ADDED_TOKENS)
    fast.chat_template = chat_template
    return fast


def build_random_model(out_dir: str | Path, *, preset: str = "tiny", seed: int = 0, tokenizer=None,
                       chat_template: str | None = TOOL_CHAT_TEMPLATE) -> Path:
    """Write a random Qwen2 checkpoint (weights, config, tokenizer, chat template) to ``out_dir``.

    ``tokenizer`` reuses an existing one (e.g. SmolLM2's 49k vocabulary for realistic logits
    memory in benchmarks); ``chat_template=None`` leaves the tokenizer without a template.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizer if tokenizer is not None else build_tokenizer(seed)
    tok.chat_template = chat_template
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    config = Qwen2Config(**({"vocab_size": len(tok)} | PRESETS[preset]), max_position_embeddings=4096,
                         tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos, pad_token_id=pad)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=eos)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, chat_template: str | None = TOOL_CHAT_TEMPLATE) -> Path:
    return build_random_model(out_dir, preset="tiny", seed=seed, chat_template=chat_template)
