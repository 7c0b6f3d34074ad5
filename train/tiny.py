"""Tiny test model: `make_tiny_model(folder)` builds a random 2-layer Llama with SmolLM2's shape and real tokenizer.

    from train.tiny import make_tiny_model; folder = make_tiny_model(tmp_path / "tiny")

Unit tests of every stage run on it instead of the real 135M weights. The tokenizer files are copied from the
converted student folder (converted once per machine, ~25 s, then cached under models/).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "generation_config.json")
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16)  # ~3.3M parameters, almost all in the 49152 x 64 embedding


def make_tiny_model(folder, seed: int = 0) -> Path:
    """Write a tiny LlamaForCausalLM (fixed seed) plus the real SmolLM2 tokenizer into `folder`; returns it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from train.models import ensure_converted
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    student = ensure_converted()
    base = json.loads((student / "config.json").read_text())
    keep = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id", "hidden_act", "rms_norm_eps",
            "tie_word_embeddings", "rope_parameters", "max_position_embeddings")
    config = LlamaConfig(**{k: base[k] for k in keep if k in base}, **TINY_SHAPE)
    config.max_position_embeddings = 2048
    # a wider init than 0.02 makes next-token logits peaked, so greedy argmax has no near-ties between
    # batched and one-by-one runs (float noise would otherwise flip them and make tests flaky)
    config.initializer_range = 0.2
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (student / name).is_file():
            shutil.copyfile(student / name, folder / name)
    return folder
