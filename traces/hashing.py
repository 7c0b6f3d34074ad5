"""The one sha256 helper, and the one adapter hash.

The adapter hash lives on the ground floor (not in train/) because migration m006 recomputes the
hashes already stored, and traces cannot import train. `train.models.adapter_hash` is this function.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

# What decides an adapter's behaviour: PEFT's config and weights (metrics, manifests and settings beside
# them are records of how it was made, not part of it, so rewriting them must not change its identity).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def adapter_hash(adapter: str | Path | None) -> str | None:
    """16 hex of sha256 over (name, sha256) of the adapter folder's ADAPTER_FILES; None for no adapter.
    The same weights hash the same wherever the folder lies (train_runs, eval_runs, gate_decisions, registry)."""
    if not adapter:
        return None
    folder = Path(adapter)
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter not found: {adapter}")
    files = [folder / name for name in ADAPTER_FILES if (folder / name).is_file()]
    if not files:
        raise FileNotFoundError(f"{adapter} holds no adapter weights ({', '.join(ADAPTER_FILES)})")
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}:{sha256_file(p)}\n".encode())
    return h.hexdigest()[:16]
