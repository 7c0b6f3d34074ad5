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

Everything else is the SFT run (train/lora.py): one run id, adapters/.tmp-<run_id>/ with checkpoints, one atomic
published folder, `train_runs` / `train_examples` rows (a pair's origin is `pair`), automatic resume, the NaN guard,
the rich progress bar. In sft+dpo the run folder holds the SFT checkpoints, then `sft-adapter/` (the finished SFT
phase), then `dpo/checkpoint-*`; a resumed run continues in the phase it was stopped in.

Pairs are TRL's conversational preference format, one per line:
`{"id", "prompt": [messages ending with a user turn], "chosen": [assistant message], "rejected": [assistant message]}`
(extra lineage fields — example_id, cluster_id, rejected_source, rejected_id — stay in the file, untrained).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from traces.settings import SettingsError
from train.lora_data import ROLES, TrainingSetError, json_object, manifest_path

METHODS = {"sft": ("sft",), "dpo": ("dpo",), "sft+dpo": ("sft", "dpo")}
SFT_DONE = "sft-adapter"  # in the run folder: the finished SFT phase of sft+dpo (adapter + its metrics)
DPO_DIR = "dpo"  # in the run folder: the DPO phase's checkpoints in sft+dpo


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
    """data/train/train.jsonl -> data/train/pairs.jsonl; data/x/foo.jsonl -> data/x/foo.pairs.jsonl"""
    path = Path(training_set)
    name = path.name.removesuffix(".jsonl")
    return path.with_name("pairs.jsonl" if name == "train" else f"{name}.pairs.jsonl")


def pair_hash(prompt: list, chosen: list, rejected: list) -> str:
    """sha256 of the pair as canonical JSON (role + content of each message)."""
    canon = {k: [{"role": m["role"], "content": m["content"]} for m in msgs]
             for k, msgs in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected))}
    return hashlib.sha256(json.dumps(canon, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def read_pairs(path: str | Path, manifest: Path | None = None) -> list[Pair]:
    """Read and validate pairs.jsonl; bad input names the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference pairs {path} do not exist (`make export` writes them beside the "
                                "training set)")
    pairs, seen = [], set()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                pair = _parse_pair(line, f"{path}:{lineno}")
                if pair.id in seen:
                    raise TrainingSetError(f"{path}:{lineno}: field 'id': duplicate id {pair.id!r}")
                seen.add(pair.id)
                pairs.append(pair)
    if not pairs:
        raise TrainingSetError(f"{path}: no preference pairs (no verified candidate has a failing response to "
                               "its prompt among the accepted examples): use --method sft")
    return _apply_manifest(pairs, manifest, path)


def paired_examples(path: Path) -> set[str]:
    """The example ids (lineage field `example_id`) that have at least one pair in pairs.jsonl."""
    with path.open(encoding="utf-8") as f:
        rows = [json_object(line, f"{path}:{i}") for i, line in enumerate(f, 1) if line.strip()]
    return {str(r["example_id"]) for r in rows if r.get("example_id")}


def _parse_pair(line: str, where: str) -> Pair:
    row = json_object(line, where)
    pid = row.get("id")
    if not isinstance(pid, (str, int)) or pid == "":
        raise TrainingSetError(f"{where}: field 'id': missing or not a string")
    prompt = _messages(row, "prompt", where, ROLES)
    if prompt[-1]["role"] != "user":
        raise TrainingSetError(f"{where}: field 'prompt': must end with a user message")
    chosen, rejected = (_messages(row, key, where, {"assistant"}) for key in ("chosen", "rejected"))
    return Pair(str(pid), prompt, chosen, rejected, pair_hash(prompt, chosen, rejected))


def _messages(row: dict, key: str, where: str, roles: set) -> list:
    msgs = row.get(key)
    if not isinstance(msgs, list) or not msgs:
        raise TrainingSetError(f"{where}: field '{key}': missing or not a non-empty list of messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in roles:
            raise TrainingSetError(f"{where}: field '{key}[{i}].role': expected one of {sorted(roles)}")
        if not isinstance(m.get("content"), str):
            raise TrainingSetError(f"{where}: field '{key}[{i}].content': expected a string")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


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


# ---------- plan (called by train.lora.make_plan) ----------

def check_method(method: str) -> None:
    if method not in METHODS:
        raise SettingsError(f"method={method!r}: expected one of {', '.join(repr(m) for m in METHODS)}")


def read_items(s, training_set: Path) -> list:
    """What a run trains on: the SFT examples (sft phase), then the pairs (dpo phase), as one list whose
    split is the one publish() records."""
    from train import lora_data
    phases = METHODS[s.method]
    items = lora_data.read_training_set(training_set) if "sft" in phases else []
    if "dpo" in phases:
        items += read_pairs(pairs_path(training_set), manifest_path(training_set))
        train, _ = _sets(items, s, "pair")
        if not train:
            raise TrainingSetError(f"{pairs_path(training_set)}: every pair fell into the validation split "
                                   f"(val_fraction={s.val_fraction}): export more pairs or lower val_fraction")
    return items


def _sets(items: list, s, origin: str) -> tuple[list, list]:
    """(train, validation) items of one kind, from the split of the whole list (train.lora_data.split)."""
    from train import lora_data
    train, val = lora_data.split(items, s.val_fraction, s.seed)
    pick = (lambda x: x.origin == "pair") if origin == "pair" else (lambda x: x.origin != "pair")
    return [x for x in train if pick(x)], [x for x in val if pick(x)]


# ---------- training (called by train.lora.train) ----------

def fit(plan, base_folder: Path, tmp: Path, callbacks=(), progress: bool = True):
    """Run the plan's phases; returns the last phase's (trainer, NaN guard, recorder) for lora.train to publish."""
    s = plan.settings
    pairs = _sets(plan.examples, s, "pair")
    if s.method == "dpo":
        trainer, guard, recorder = build_trainer(plan, base_folder, tmp, pairs, callbacks, progress)
        trainer.train(resume_from_checkpoint=str(plan.checkpoint) if plan.checkpoint else None)
        return trainer, guard, recorder
    return _sft_then_dpo(plan, base_folder, tmp, pairs, callbacks, progress)


def _sft_then_dpo(plan, base_folder: Path, tmp: Path, pairs, callbacks, progress):
    from train import lora, lora_runs
    done = tmp / SFT_DONE
    if not (done / "adapter_model.safetensors").is_file():
        sft = _sets(plan.examples, plan.settings, "sft")
        trainer, guard, recorder = lora.build_trainer(plan, base_folder, tmp, callbacks, progress, sets=sft)
        trainer.train(resume_from_checkpoint=str(plan.checkpoint) if plan.checkpoint else None)
        if guard.failure:
            return trainer, guard, recorder
        _save_phase(trainer, lora.finish_metrics(trainer, recorder, plan) | {"n_examples": len(sft[0] + sft[1])},
                    done)
        del trainer
    else:  # this session starts in the DPO phase: say so in metrics' resumed_from
        plan.checkpoint = lora_runs.last_checkpoint(tmp / DPO_DIR) or done
    sft_metrics = json.loads((done / "phase_metrics.json").read_text())
    ckpt = lora_runs.last_checkpoint(tmp / DPO_DIR)
    trainer, guard, recorder = build_trainer(plan, base_folder, tmp / DPO_DIR, pairs, callbacks, progress,
                                             init_adapter=done)
    trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    return trainer, guard, PhasedRecorder(sft_metrics, recorder)


def _save_phase(trainer, metrics: dict, folder: Path) -> None:
    """The finished SFT adapter and its metrics, renamed into place in one step (a kill leaves none or all)."""
    part = folder.with_name(folder.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    trainer.model.save_pretrained(str(part))
    (part / "phase_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    part.rename(folder)


class PhasedRecorder:
    """sft+dpo metrics: the DPO recorder's figures at the top (what finish_metrics reads: `evals`, `summary()`),
    each step and eval tagged with its phase, and each phase's headline figures under `phases`."""

    def __init__(self, sft_metrics: dict, dpo_recorder):
        self.sft, self.dpo = sft_metrics, dpo_recorder
        self.evals = dpo_recorder.evals  # finish_metrics compares these with the DPO trainer's step

    def summary(self) -> dict:
        dpo = self.dpo.summary()
        tag = lambda rows, phase: [r | {"phase": phase} for r in rows]  # noqa: E731
        headline = lambda m: {k: v for k, v in m.items() if k not in ("steps", "evals")}  # noqa: E731
        return dpo | {"steps": tag(self.sft.get("steps", []), "sft") + tag(dpo["steps"], "dpo"),
                      "evals": tag(self.sft.get("evals", []), "sft") + tag(dpo["evals"], "dpo"),
                      "phases": {"sft": headline(self.sft), "dpo": headline(dpo)}}


def build_trainer(plan, base_folder: Path, out_dir: Path, sets, callbacks=(), progress=True, init_adapter=None):
    """DPOTrainer on the base + a fresh LoRA adapter (optionally starting from `init_adapter`'s weights)."""
    import datasets
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import DPOTrainer
    from train import lora, lora_callbacks
    s = plan.settings
    train_set, val_set = sets
    # TRL switches checkpointing off around every reference forward through transformers' deprecated names
    warnings.filterwarnings("ignore", category=FutureWarning,
                            message=r"`(gradient_checkpointing_(en|dis)able|is_gradient_checkpointing)` is deprecated")
    if s.cpu_threads > 0:
        import torch
        torch.set_num_threads(s.cpu_threads)
    datasets.disable_progress_bars()
    dev = lora.device_plan(s)
    model = lora.load_base(base_folder, s, dev)
    guard, recorder = lora_callbacks.NonFiniteGuard(), lora_callbacks.MetricsRecorder()
    cbs = [guard, recorder, *callbacks]
    if progress:
        cbs.append(lora_callbacks.RichProgress(recorder))
    if val_set and s.patience > 0:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=s.patience))
    # ref_model=None + peft_config: TRL wraps the base itself and uses it, adapter disabled, as the reference
    trainer = DPOTrainer(model=model, ref_model=None, args=dpo_config(s, out_dir, dev, bool(val_set)),
                         processing_class=lora.training_tokenizer(base_folder), train_dataset=_dataset(train_set),
                         eval_dataset=_dataset(val_set) if val_set else None, peft_config=lora.lora_config(s),
                         callbacks=cbs)
    if init_adapter is not None:
        load_adapter_weights(trainer.model, Path(init_adapter))
    for cb in (PrinterCallback, ProgressCallback):  # our rich bar replaces them
        trainer.remove_callback(cb)
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
    from train.lora import trainer_args
    return DPOConfig(
        **trainer_args(s, out_dir, dev, has_val),
        # sigmoid DPO loss; each batch holds batch_size_train pairs (2x sequences), cut at max_length tokens
        beta=s.dpo_beta, max_length=s.max_length, precompute_ref_log_probs=False,
        **({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, s.dpo_sft_weight]} if s.dpo_sft_weight > 0
           else {"loss_type": ["sigmoid"]}),
    )
