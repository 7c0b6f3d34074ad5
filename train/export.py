"""python -m train export ADAPTER [--out DIR] [--merge] [--push-to-hub REPO [--base-model HUB_ID] [--public]]

Writes a trained adapter (a folder, or a run id under adapters/) for serving:
  - default: standard PEFT form, adapter_config.json + adapter_model.safetensors (+ mend_adapter.json), with
    base_model_name_or_path pointing at the local base folder: what vLLM's `--lora-modules name=DIR` and
    transformers' / peft's `PeftModel.from_pretrained` load;
  - --merge: the base with the adapter merged in (merge_and_unload), a full-weight HF folder with the tokenizer,
    servable by anything that loads a plain model (vLLM, `transformers serve`, llama.cpp's converter).
Default output: data/exports/<name>[-merged]. Written to a temporary folder and renamed, so never half-written.
--push-to-hub REPO then uploads that folder as a Hub model repo (private unless --public; needs HF_TOKEN), with a
model card (README.md) and, in PEFT form, `base_model_name_or_path` set to the base's Hub id (--base-model; known
for the embedded student and for a base given as a Hub id) instead of the local folder.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from traces.settings import load, resolve_path

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


class ExportError(RuntimeError):
    pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train export", description=__doc__.split("\n\n")[1])
    p.add_argument("adapter", help="adapter folder, a run id under the adapters folder, or `latest` (the newest "
                                   "complete train run's)")
    p.add_argument("--out", help="output folder (default data/exports/<name>[-merged])")
    p.add_argument("--merge", action="store_true", help="write full weights with the adapter merged in")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--push-to-hub", metavar="REPO", help="then upload the exported folder to this Hub model repo "
                                                          "(needs HF_TOKEN)")
    p.add_argument("--base-model", metavar="HUB_ID", help="with --push-to-hub: the base model's Hub id, written "
                                                           "into the pushed adapter_config.json and model card")
    p.add_argument("--public", action="store_true", help="with --push-to-hub: a public repo (default: private)")
    args = p.parse_args(argv)
    from rich.console import Console
    from rich.markup import escape

    from train.hub import HubError
    source = find_adapter(args.adapter)
    out = resolve_path(args.out) if args.out else \
        resolve_path(f"data/exports/{source.name}{'-merged' if args.merge else ''}")
    from train.models import ModelError
    console = Console()
    try:
        # every check of a push before the export: no token or no base id, and nothing is written
        push = push_plan(source, args.push_to_hub, args.base_model, args.merge) if args.push_to_hub else None
        with console.status(f"{'merging' if args.merge else 'exporting'} {source.name}"):
            written = export_merged(source, out, args.force) if args.merge else export_peft(source, out, args.force)
        console.print(f"[green]ok[/] {written}")
        if push:
            with console.status(f"pushing {written.name} to {args.push_to_hub}"):
                url = push_to_hub(written, args.push_to_hub, push, args.merge, private=not args.public)
            console.print(f"[green]pushed[/] {url} ({'public' if args.public else 'private'})", highlight=False)
    except (ExportError, ModelError, FileExistsError, HubError) as e:  # a wrong adapter, an existing output, no
        Console(stderr=True).print(f"[red]error:[/] {escape(str(e))}", highlight=False)  # token: one line
        return 2
    return 0


def push_plan(adapter: Path, repo_id: str, base_model: str | None, merged: bool) -> dict:
    """What a push needs, checked before anything is exported: the token and the base's Hub id (a PEFT adapter is
    useless on the Hub without one; merged weights name it in their card only)."""
    from train import hub
    tok = hub.token()
    base_ref = str(base_of(adapter))
    base_id = base_model or hub.hub_base_id(base_ref)
    if base_id is None and not merged:
        raise ExportError(f"the adapter's base {base_ref!r} is a local folder: name its Hub id with --base-model "
                          f"(what loaders of {repo_id} will download), or push full weights with --merge")
    from train.models import read_adapter_manifest
    manifest = read_adapter_manifest(adapter) or {}
    info = {"base (mend ref)": base_ref, "run id": manifest.get("run_id"),
            "base fingerprint": manifest.get("base_fingerprint"),
            "training set hash": manifest.get("training_set_hash")}
    return {"token": tok, "base_ref": base_ref, "base_id": base_id, "info": info}


def push_to_hub(folder: Path, repo_id: str, push: dict, merged: bool, private: bool = True) -> str:
    """Upload an exported folder (train.hub.push_folder) with a model card; in PEFT form its adapter_config.json
    names the base by Hub id in the upload (the local export keeps the local folder)."""
    from train import hub

    def edit(staging: Path) -> None:
        if not merged:
            config = json.loads((staging / "adapter_config.json").read_text())
            config["base_model_name_or_path"] = push["base_id"]
            (staging / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (staging / "README.md").write_text(hub.model_card(repo_id, push["base_id"], merged, push["base_ref"],
                                                                 push["info"]))
    return hub.push_folder(folder, repo_id, push["token"], private=private, edit=edit)


def find_adapter(ref: str) -> Path:
    """A folder path, a run id under [tool.mend.train] adapters_dir, or `latest`: the newest complete train run's."""
    if ref == "latest":
        from traces import store
        with store.connect(read_only=True) as con:
            row = con.execute("""SELECT adapter_path FROM train_runs WHERE status = 'complete'
                                 AND adapter_path IS NOT NULL ORDER BY started_at DESC LIMIT 1""").fetchone()
        if row is None:
            raise FileNotFoundError("no adapter 'latest': no train run has completed in this store")
        ref = row[0]
    for candidate in (resolve_path(ref), resolve_path(load("train").adapters_dir) / ref):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    raise FileNotFoundError(f"no adapter {ref!r}: not a folder with adapter_config.json, nor a run id in "
                            f"{resolve_path(load('train').adapters_dir)}")


def base_of(adapter: Path) -> str:
    """The base model ref recorded by `train lora` (mend_adapter.json), else the one in adapter_config.json."""
    from train.models import read_adapter_manifest
    manifest = read_adapter_manifest(adapter)
    if manifest:
        return manifest.get("base_ref") or manifest.get("base_model")
    return json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]


def export_peft(adapter: Path, out: Path, force: bool = False) -> Path:
    from train.models import check_adapter, resolve
    base_folder = resolve(base_of(adapter))
    check_adapter(adapter, base_folder)  # refuses an adapter trained on another base
    config = json.loads((adapter / "adapter_config.json").read_text())
    _check_servable(adapter, config)
    config["base_model_name_or_path"] = str(base_folder)  # a local folder every loader can open offline
    with _atomic_dir(out, force) as tmp:
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        shutil.copyfile(adapter / "adapter_model.safetensors", tmp / "adapter_model.safetensors")
        if (adapter / "mend_adapter.json").is_file():
            shutil.copyfile(adapter / "mend_adapter.json", tmp / "mend_adapter.json")
    return out


def _check_servable(adapter: Path, config: dict) -> None:
    """vLLM takes LoRA weights only: no modules_to_save copies, no DoRA; the weights must be safetensors."""
    from safetensors import safe_open
    if config.get("peft_type") != "LORA":
        raise ExportError(f"{adapter}: peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("use_dora") or config.get("modules_to_save"):
        raise ExportError(f"{adapter}: DoRA / modules_to_save adapters are not servable as plain LoRA; use --merge")
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise ExportError(f"{adapter}: no adapter_model.safetensors")
    with safe_open(str(weights), "pt") as f:
        odd = [k for k in f.keys() if "lora_A" not in k and "lora_B" not in k]
    if odd:
        raise ExportError(f"{adapter}: non-LoRA tensors in the adapter ({odd[:3]}); use --merge")


def export_merged(adapter: Path, out: Path, force: bool = False) -> Path:
    import torch
    from train.models import load, load_tokenizer
    base_ref = base_of(adapter)
    model, _ = load(base_ref, adapter=adapter, dtype=torch.float32, device="cpu")  # checks the fingerprint
    merged = model.merge_and_unload()
    tokenizer = load_tokenizer(base_ref)
    tokenizer.padding_side = "right"  # the stored default; generation code sets left padding itself
    with _atomic_dir(out, force) as tmp:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "MERGED_FROM.json").write_text(json.dumps({"base_ref": str(base_ref), "adapter": str(adapter)},
                                                         indent=2) + "\n")
    return out


class _atomic_dir:
    """Write into a sibling temporary folder; rename it to `out` only if the block succeeded."""

    def __init__(self, out: Path, force: bool):
        self.out, self.force = out, force

    def __enter__(self) -> Path:
        if self.out.exists() and not self.force:
            raise FileExistsError(f"{self.out} exists (use --force to replace it)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}-", dir=self.out.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            if self.out.exists():
                shutil.rmtree(self.out)
            os.rename(self.tmp, self.out)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False
