"""python -m train lora --method dpo|sft+dpo — DPO on preference pairs with TRL's DPOTrainer on the LoRA adapter.

- `--method dpo`: DPO from the base on the pairs that the export (`make export`) writes beside the training set
  (`pairs.jsonl` next to `train.jsonl`, else `<name>.pairs.jsonl`), listed under `pairs` in the same manifest.
- `--method sft+dpo`: SFT on the training set, then DPO on the same adapter. `epochs`, `max_steps` and `lr` apply
  to each phase; `dpo_beta` is DPO's beta (how far the policy may move from the reference).

The reference model is the base with the adapter disabled, never a second copy of the model: DPOTrainer gets the
base model and the LoRA config, so it wraps the model itself, keeps `ref_model = None`, and computes the reference
log-probs with the same weights under `disable_adapter()` (trl.trainer.utils.use_adapter(model, None)). In sft+dpo
the DPO phase loads the SFT adapter's weights into that fresh adapter; handed a PeftModel instead, TRL 1.x would
copy the adapter into a frozen "ref" adapter and measure against the SFT policy, not the base.

This module reads the pairs and builds the DPO trainer on what train/trainer.py shares with SFT; train/lora.py
chooses the method and runs the phases (this module never imports it). Everything else is the SFT run: one run
id, adapters/.tmp-<run_id>/ with checkpoints, one atomic published folder, `train_runs` / `train_examples` rows
(a pair's origin is `pair`), automatic resume, the NaN guard, the rich progress bar. In sft+dpo the run folder holds the SFT checkpoints, then `sft-adapter/` (the finished SFT
phase), then `dpo/checkpoint-*`; a resumed run continues in the phase it was stopped in.

Pairs are TRL's conversational preference format, one per line:
`{"id", "prompt": [messages ending with a user turn], "chosen": [assistant message], "rejected": [assistant message]}`
(extra lineage fields — example_id, cluster_id, rejected_source, rejected_id — stay in the file, untrained).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from train import trainer as shared
from train.lora_data import (PAIRS_SPLIT, TrainingSetError, canonical, dataset_rows, digest, item_id, json_object,
                              messages, read_lines)


@dataclass(frozen=True)
class Pair:
    """One preference pair; `id`, `origin` and `content_hash` are what run bookkeeping reads (as for an Example)."""
    id: str
    prompt: list  # messages, the last one a user turn
    chosen: list  # [assistant message]
    rejected: list  # [assistant message]
    content_hash: str
    origin: str = "pair"


# ---------- files ----------

def pairs_path(training_set: str | Path) -> Path:
    """data/train/train.jsonl -> data/train/pairs.jsonl; data/x/foo.jsonl -> data/x/foo.pairs.jsonl; a `datasets`
    folder holds its pairs itself (its `pairs` split)."""
    path = Path(training_set)
    if path.is_dir():
        return path
    name = path.name.removesuffix(".jsonl")
    return path.with_name("pairs.jsonl" if name == "train" else f"{name}.pairs.jsonl")


def pair_hash(prompt: list, chosen: list, rejected: list) -> str:
    """sha256 of the pair as canonical JSON (role + content of each message)."""
    return digest({"prompt": canonical(prompt), "chosen": canonical(chosen), "rejected": canonical(rejected)})


def read_pairs(path: str | Path, manifest: Path | None = None) -> list[Pair]:
    """Read and validate pairs.jsonl (or a `datasets` folder's `pairs` split); bad input names the file, line and
    field."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"preference pairs {path} do not exist (`make export` writes them beside the "
                                "training set)")
    pairs = read_lines(path, _parse_pair, PAIRS_SPLIT)
    if not pairs:
        raise TrainingSetError(f"{path}: no preference pairs (no verified candidate has a failing response to "
                               "its prompt among the accepted examples): use --method sft")
    return _apply_manifest(pairs, manifest, path)


def paired_examples(path: Path) -> set[str]:
    """The example ids (lineage field `example_id`) that have at least one pair in pairs.jsonl (or a `datasets`
    folder's `pairs` split)."""
    if path.is_dir():
        rows = [row for _, row in dataset_rows(path, PAIRS_SPLIT)]
    else:
        with path.open(encoding="utf-8") as f:
            rows = [json_object(line, f"{path}:{i}") for i, line in enumerate(f, 1) if line.strip()]
    return {str(r["example_id"]) for r in rows if r.get("example_id")}


def _parse_pair(line, where: str) -> Pair:
    row = line if isinstance(line, dict) else json_object(line, where)  # a `datasets` row, or a JSONL line
    pid = item_id(row, where)
    prompt = messages(row, "prompt", where)
    if prompt[-1]["role"] != "user":
        raise TrainingSetError(f"{where}: field 'prompt': must end with a user message")
    chosen, rejected = (messages(row, key, where, {"assistant"}) for key in ("chosen", "rejected"))
    return Pair(pid, prompt, chosen, rejected, pair_hash(prompt, chosen, rejected))


def _apply_manifest(pairs: list[Pair], manifest: Path | None, path: Path) -> list[Pair]:
    """The export manifest's `pairs.items` must name exactly the file's ids; its content hashes win (as for SFT)."""
    if manifest is None or not manifest.is_file():
        return pairs
    try:
        section = json.loads(manifest.read_text()).get("pairs")
        items = None if section is None else {str(i["id"]): i.get("content_hash") for i in section["items"]}
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as e:
        raise TrainingSetError(f"{manifest}: not a training-set manifest ({e})") from None
    if items is None:
        raise TrainingSetError(f"{manifest}: lists no preference pairs, so {path.name} is not from the same export "
                               "(run `make export` again)")
    ids = {p.id for p in pairs}
    if set(items) != ids:
        extra, missing = sorted(set(items) - ids)[:3], sorted(ids - set(items))[:3]
        raise TrainingSetError(f"{manifest}: field 'pairs.items' does not match {path.name} "
                               f"(only in manifest: {extra}, only in {path.name}: {missing})")
    return [Pair(p.id, p.prompt, p.chosen, p.rejected, items[p.id] or p.content_hash) for p in pairs]


# ---------- the DPO trainer (train.lora runs the phases) ----------

def build_trainer(plan, base_folder: Path, out_dir: Path, sets, callbacks=(), progress=True, init_adapter=None):
    """DPOTrainer on the base + a fresh LoRA adapter (optionally starting from `init_adapter`'s weights)."""
    from trl import DPOTrainer
    # TRL switches checkpointing off around every reference forward through transformers' deprecated names
    warnings.filterwarnings("ignore", category=FutureWarning,
                            message=r"`(gradient_checkpointing_(en|dis)able|is_gradient_checkpointing)` is deprecated")
    # ref_model=None + peft_config: TRL wraps the base itself and uses it, adapter disabled, as the reference
    from train.lora_runs import tmp_dir
    log_dir = tmp_dir(plan.adapters_dir, plan.run_id) / "tensorboard" / "dpo"  # train.lora.TENSORBOARD
    trainer, guard, recorder = shared.build(DPOTrainer, dpo_config, plan.settings, base_folder, out_dir, sets,
                                            _dataset, callbacks, progress, log_dir=log_dir, ref_model=None)
    if init_adapter is not None:
        load_adapter_weights(trainer.model, Path(init_adapter))
    return trainer, guard, recorder


def _dataset(pairs: list[Pair]):
    from datasets import Dataset
    return Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])


def load_adapter_weights(model, folder: Path) -> None:
    """Copy a saved adapter's LoRA weights into the model's active adapter (same LoRA config)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    weights = load_file(str(folder / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, weights)
    if result.unexpected_keys:
        raise TrainingSetError(f"{folder}: adapter weights that the DPO adapter does not have "
                               f"({result.unexpected_keys[:3]}): was the LoRA config changed?")


def dpo_config(s, out_dir: Path, dev: dict, has_val: bool):
    from trl import DPOConfig
    return DPOConfig(
        **shared.trainer_args(s, out_dir, dev, has_val),
        # the dpo_loss setting (TRL's loss_type); each batch holds batch_size_train pairs (2x sequences), cut at
        # max_length tokens
        beta=s.dpo_beta, max_length=s.max_length, precompute_ref_log_probs=False,
        **({"loss_type": [s.dpo_loss, "sft"], "loss_weights": [1.0, s.dpo_sft_weight]} if s.dpo_sft_weight > 0
           else {"loss_type": [s.dpo_loss]}),
    )
