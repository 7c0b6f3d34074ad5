"""python -m train lora [--training-set PATH] [--out DIR] [--resume | --fresh] [--method auto|sft|dpo|sft+dpo] [--lr ...]

Fine-tunes a LoRA adapter (QLoRA with `quantization = "nf4"` on a CUDA GPU) on the training set that
`make export` (curate's export) wrote, with TRL's SFTTrainer. The loss covers the assistant tokens only (the
training chat template in train/templates/ marks them), batches are length-grouped (or packed), the learning rate
warms up then follows a cosine, a validation split gives eval loss and early stopping.

Writes adapters/<run_id>/ (PEFT adapter, mend_adapter.json with the base fingerprint, settings.json,
manifest.json with the exact examples, metrics.json) atomically, plus `train_runs` / `train_examples` rows.
A killed run resumes from its last checkpoint (automatically when the training set and settings match);
a NaN/inf loss stops the run and publishes nothing. Every setting of [tool.mend.train] is also a flag.
`--method dpo` / `sft+dpo` train on the preference pairs exported beside the training set (train/dpo.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from traces.settings import SettingsError, as_dict, load_with_sources, resolve_path
from train import dpo, lora_data, lora_runs
from train.trainer import build, check_report_to, close_loggers, device_plan, finish_metrics, trainer_args

# the one place that dispatches on the method: train/dpo.py knows DPO only and never imports this module
METHODS = {"sft": ("sft",), "dpo": ("dpo",), "sft+dpo": ("sft", "dpo")}
SFT_DONE = "sft-adapter"  # in the run folder: the finished SFT phase of sft+dpo (adapter + its metrics)
DPO_DIR = "dpo"  # in the run folder: the DPO phase's checkpoints in sft+dpo
TENSORBOARD = "tensorboard"  # in the run folder, then the adapter folder: report_to="tensorboard"'s <phase>/ events


class TrainingFailed(RuntimeError):
    pass


@dataclass
class Plan:
    """What a run will do, decided before any model is loaded (and identical on every accelerate rank)."""
    settings: object
    sources: dict
    training_set: Path
    examples: list
    set_hash: str
    settings_hash: str
    run_id: str
    adapters_dir: Path
    final_dir: Path
    checkpoint: Path | None  # resume from here


@dataclass
class RunResult:
    run_id: str
    status: str  # complete | failed
    adapter_dir: Path | None
    metrics: dict
    error: str | None = None
    trainer: object = field(default=None, repr=False)  # kept for tests (keep_trainer=True)


# ---------- command line ----------

def parse_args(argv):
    from train.settings import TrainSettings
    p = argparse.ArgumentParser(prog="python -m train lora", description=__doc__.split("\n\n")[1])
    p.add_argument("--out", help="publish the adapter in this folder instead of adapters/<run_id>")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="resume the matching unfinished run (error if none)")
    group.add_argument("--fresh", action="store_true", help="start over even if a matching checkpoint exists")
    p.add_argument("--run-id", help=argparse.SUPPRESS)  # set by the accelerate re-launch, same on every rank
    for f in dataclasses.fields(TrainSettings):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        else:  # strings are parsed to the field's type by traces.settings
            p.add_argument(flag, dest=f.name, default=None, metavar=type(f.default).__name__.upper())
    args = p.parse_args(argv)
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSettings)}
    return args, flags


def main(argv=None) -> int:
    result = run(sys.argv[1:] if argv is None else list(argv))
    if is_main_process():
        show(result)
    return 0 if result.status == "complete" else 1


def run(argv: list[str]) -> RunResult:
    """`train lora` with these flags, for a caller that needs the run it made (the nightly hands it forward)."""
    args, flags = parse_args(argv)
    settings, sources = load_with_sources("train", flags)
    resume = "require" if args.resume else "never" if args.fresh else "auto"
    plan = make_plan(settings, sources, args.out, resume, args.run_id)
    if needs_launch(settings):
        code = relaunch(settings, argv, plan)
        return RunResult(plan.run_id, "complete" if code == 0 else "failed", plan.final_dir if code == 0 else None,
                         {}, None if code == 0 else f"accelerate launch exited with {code}")
    if plan.checkpoint and is_main_process():
        from rich.console import Console
        Console().print(f"resuming run {plan.run_id} from {plan.checkpoint.name} (--fresh to start over)")
    return train(plan)


# ---------- plan ----------

def make_plan(settings, sources=None, out=None, resume="auto", run_id=None) -> Plan:
    check_settings(settings)
    path = resolve_path(settings.training_set)
    settings = resolve_method(settings, path)
    examples = read_items(settings, path)
    set_hash, s_hash = lora_data.set_hash(examples), lora_runs.settings_hash(settings)
    final = resolve_path(out) if out else None
    if final and final.exists():  # refuse before training, not after
        raise SettingsError(f"--out {final} already exists: choose another folder or remove it")
    adapters_dir = final.parent if final else resolve_path(settings.adapters_dir)
    found = None if resume == "never" else lora_runs.find_resumable(adapters_dir, set_hash, s_hash)
    if run_id:  # a launched rank: resume exactly what the launcher decided
        tmp = lora_runs.tmp_dir(adapters_dir, run_id)
        found = (run_id, lora_runs.last_checkpoint(tmp)) if tmp.is_dir() else None
    if resume == "require" and not (found and found[1]):
        raise SettingsError(f"--resume: no unfinished run of this training set and settings in {adapters_dir}")
    run_id, ckpt = found if found and found[1] else (run_id or lora_runs.new_run_id(set_hash), None)
    return Plan(settings, sources or {}, path, examples, set_hash, s_hash, run_id, adapters_dir,
                final or adapters_dir / run_id, ckpt)


def resolve_method(s, training_set: Path):
    """method="auto": DPO when the export paired at least half of its examples with a failing answer to the same
    prompt, else SFT. Why: on the demo data DPO took the targeted validation checks from 3.7% to 48.1% with prose
    perplexity -2.8%, SFT (lr 1e-3) to 25.9% at +7.5%, and SFT x 3 epochs was rejected by the gate's perplexity
    guard (docs/benchmarks.md). DPO trains on the pairs only, so a set with few pairs trains with SFT."""
    if s.method != "auto":
        return s
    pairs = dpo.pairs_path(training_set)
    examples = {x.id for x in lora_data.read_training_set(training_set) if x.origin == "example"}
    paired = (dpo.paired_examples(pairs) & examples) if pairs.exists() else set()
    method = "dpo" if examples and len(paired) >= len(examples) / 2 else "sft"
    if is_main_process():
        from rich.console import Console
        Console(stderr=True).print(f"method auto -> {method}: {len(paired)} of {len(examples)} exported examples "
                                   f"have a preference pair (dpo when at least half do)", highlight=False)
    return dataclasses.replace(s, method=method)


def check_settings(s) -> None:
    if s.quantization not in ("none", "nf4"):
        raise SettingsError(f"quantization={s.quantization!r}: expected 'none' or 'nf4'")
    if s.precision not in ("auto", "bf16", "fp32"):
        raise SettingsError(f"precision={s.precision!r}: expected 'auto', 'bf16' or 'fp32'")
    if s.method != "auto":  # resolved by resolve_method once the training set is known
        check_method(s.method)
    if not 0 <= s.val_fraction < 1 or not 0 <= s.warmup_ratio < 1:
        raise SettingsError("val_fraction and warmup_ratio must be in [0, 1)")
    if s.lora_r < 1 or s.batch_size_train < 1 or s.grad_accum < 1 or s.max_length < 16 or s.save_steps < 1:
        raise SettingsError("lora_r, batch_size_train, grad_accum, save_steps must be >= 1 and max_length >= 16")
    check_report_to(s)


def check_method(method: str) -> None:
    if method not in METHODS:
        raise SettingsError(f"method={method!r}: expected one of {', '.join(repr(m) for m in METHODS)}")


def read_items(s, training_set: Path) -> list:
    """What a run trains on: the SFT examples (sft phase), then the pairs (dpo phase), as one list whose
    split is the one publish() records."""
    phases = METHODS[s.method]
    items = lora_data.read_training_set(training_set) if "sft" in phases else []
    if "dpo" in phases:
        items += dpo.read_pairs(dpo.pairs_path(training_set), lora_data.manifest_path(training_set))
        train_items, _ = _sets(items, s, "pair")
        if not train_items:
            raise lora_data.TrainingSetError(
                f"{dpo.pairs_path(training_set)}: every pair fell into the validation split "
                f"(val_fraction={s.val_fraction}): export more pairs or lower val_fraction")
    return items


def _sets(items: list, s, origin: str) -> tuple[list, list]:
    """(train, validation) items of one kind, from the split of the whole list (train.lora_data.split)."""
    train_items, val = lora_data.split(items, s.val_fraction, s.seed)
    pick = (lambda x: x.origin == "pair") if origin == "pair" else (lambda x: x.origin != "pair")
    return [x for x in train_items if pick(x)], [x for x in val if pick(x)]


# ---------- scale-out (multi-GPU; not exercised on the CPU machines this was written on) ----------

def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def needs_launch(s) -> bool:
    """More than one GPU and not already a rank of a distributed launch."""
    if "LOCAL_RANK" in os.environ or "WORLD_SIZE" in os.environ:
        return False
    import torch
    return torch.cuda.device_count() > 1


def relaunch(s, argv: list[str], plan: Plan) -> int:
    """Re-run this command once per GPU through `accelerate launch` (data parallel, or FSDP with fsdp=true)."""
    import torch
    n = s.num_processes or torch.cuda.device_count()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n), "--num_machines", "1",
           "--mixed_precision", "bf16" if device_plan(s)["bf16"] else "no"]
    if s.fsdp:
        cmd += ["--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                "--fsdp_state_dict_type", "FULL_STATE_DICT"]
    else:
        cmd += ["--multi_gpu"]
    rest = [a for a in argv if a not in ("--resume", "--fresh")]
    cmd += ["-m", "train", "lora", *rest, "--run-id", plan.run_id, "--resume" if plan.checkpoint else "--fresh"]
    return subprocess.call(cmd)


# ---------- training ----------

def train(plan: Plan, callbacks=(), progress: bool = True, keep_trainer: bool = False) -> RunResult:
    """Train, then publish the adapter or record the failure. DB connections are opened only around the run."""
    from train.models import fingerprint, resolve
    s, main_rank = plan.settings, is_main_process()
    tmp = lora_runs.tmp_dir(plan.adapters_dir, plan.run_id)
    base_folder = resolve(s.model)
    fp = fingerprint(base_folder)
    if main_rank:
        lora_runs.start_tmp(tmp, plan.run_id, plan.set_hash, plan.settings_hash)
        lora_runs.db_start(plan.run_id, s.model, fp, plan.training_set, plan.set_hash, as_dict(s), plan.examples)
    try:
        trainer, guard, recorder = fit(plan, base_folder, tmp, callbacks, progress)
        if guard.failure:
            raise TrainingFailed(guard.failure)
        metrics = finish_metrics(trainer, recorder, plan)
        if main_rank:
            publish(plan, trainer, tmp, base_folder, metrics)
    except TrainingFailed as e:
        return _failed(plan, tmp, str(e), recorder.summary(), discard=True)
    except BaseException as e:  # a crash or Ctrl-C keeps the checkpoints for a resume
        if main_rank:
            lora_runs.db_finish(plan.run_id, "failed", error=f"{type(e).__name__}: {e}"[:2000])
        raise
    result = RunResult(plan.run_id, "complete", plan.final_dir, metrics)
    if keep_trainer:
        result.trainer = trainer
    return result


def _failed(plan: Plan, tmp: Path, error: str, metrics: dict, discard: bool) -> RunResult:
    if is_main_process():
        if discard:  # its checkpoints lead to the same NaN: nothing there is worth resuming
            shutil.rmtree(tmp, ignore_errors=True)
        lora_runs.db_finish(plan.run_id, "failed", metrics=metrics, error=error)
    return RunResult(plan.run_id, "failed", None, metrics, error)


def fit(plan: Plan, base_folder: Path, tmp: Path, callbacks=(), progress: bool = True):
    """Run the plan's phases; returns the last phase's (trainer, NaN guard, recorder) for train() to publish."""
    s = plan.settings
    if s.method == "sft+dpo":
        return _sft_then_dpo(plan, base_folder, tmp, callbacks, progress)
    if s.method == "sft":
        trainer, guard, recorder = build_trainer(plan, base_folder, tmp, callbacks, progress)
    else:
        pairs = _sets(plan.examples, s, "pair")
        trainer, guard, recorder = dpo.build_trainer(plan, base_folder, tmp, pairs, callbacks, progress)
    trainer.train(resume_from_checkpoint=str(plan.checkpoint) if plan.checkpoint else None)
    return trainer, guard, recorder


def _sft_then_dpo(plan: Plan, base_folder: Path, tmp: Path, callbacks, progress):
    done = tmp / SFT_DONE
    if not (done / "adapter_model.safetensors").is_file():
        sft = _sets(plan.examples, plan.settings, "sft")
        trainer, guard, recorder = build_trainer(plan, base_folder, tmp, callbacks, progress, sets=sft)
        trainer.train(resume_from_checkpoint=str(plan.checkpoint) if plan.checkpoint else None)
        if guard.failure:
            return trainer, guard, recorder
        _save_phase(trainer, finish_metrics(trainer, recorder, plan) | {"n_examples": len(sft[0] + sft[1])}, done)
        del trainer
    else:  # this session starts in the DPO phase: say so in metrics' resumed_from
        plan.checkpoint = lora_runs.last_checkpoint(tmp / DPO_DIR) or done
    sft_metrics = json.loads((done / "phase_metrics.json").read_text())
    ckpt = lora_runs.last_checkpoint(tmp / DPO_DIR)
    pairs = _sets(plan.examples, plan.settings, "pair")
    trainer, guard, recorder = dpo.build_trainer(plan, base_folder, tmp / DPO_DIR, pairs, callbacks, progress,
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
        dpo_m = self.dpo.summary()
        tag = lambda rows, phase: [r | {"phase": phase} for r in rows]  # noqa: E731
        headline = lambda m: {k: v for k, v in m.items() if k not in ("steps", "evals")}  # noqa: E731
        return dpo_m | {"steps": tag(self.sft.get("steps", []), "sft") + tag(dpo_m["steps"], "dpo"),
                        "evals": tag(self.sft.get("evals", []), "sft") + tag(dpo_m["evals"], "dpo"),
                        "phases": {"sft": headline(self.sft), "dpo": headline(dpo_m)}}


def build_trainer(plan: Plan, base_folder: Path, tmp: Path, callbacks=(), progress=True, sets=None):
    """SFTTrainer on the base + a fresh LoRA adapter. `sets`: (train, validation) chosen by the caller (sft+dpo's
    SFT phase); else the split publish() records."""
    from trl import SFTTrainer
    s = plan.settings
    sets = sets if sets is not None else lora_data.split(plan.examples, s.val_fraction, s.seed)
    return build(SFTTrainer, sft_config, s, base_folder, tmp, sets, _dataset, callbacks, progress,
                 log_dir=log_dir(plan, "sft"))


def log_dir(plan: Plan, phase: str) -> Path:
    """Where a phase's TensorBoard events go while training: the run folder's tensorboard/<phase>/ (published with
    the adapter)."""
    return lora_runs.tmp_dir(plan.adapters_dir, plan.run_id) / TENSORBOARD / phase


def _dataset(examples):
    from datasets import Dataset
    return Dataset.from_list([{"messages": ex.messages} for ex in examples])


def sft_config(s, tmp: Path, dev: dict, has_val: bool):
    from trl import SFTConfig
    return SFTConfig(
        **trainer_args(s, tmp, dev, has_val),
        # TRL: loss on the {% generation %} spans only; packing = best-fit padding-free blocks of max_length
        assistant_only_loss=True, max_length=s.max_length, packing=s.packing, packing_strategy="bfd",
        train_sampling_strategy="random" if s.packing else "group_by_length",
    )


# ---------- outputs ----------

def publish(plan: Plan, trainer, tmp: Path, base_folder: Path, metrics: dict) -> None:
    from traces.hashing import adapter_hash
    from train.models import write_adapter_manifest
    out = tmp / "publish"
    shutil.rmtree(out, ignore_errors=True)
    state = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    trainer.model.save_pretrained(str(out), state_dict=state)  # PEFT: adapter_config.json + adapter_model.safetensors
    write_adapter_manifest(out, plan.settings.model, run_id=plan.run_id, base_folder=str(base_folder),
                           training_set=str(plan.training_set), training_set_hash=plan.set_hash)
    (out / "settings.json").write_text(json.dumps({"settings": as_dict(plan.settings), "sources": plan.sources},
                                                  indent=1) + "\n")
    train_set, val_set = lora_data.split(plan.examples, plan.settings.val_fraction, plan.settings.seed)
    lora_data.write_manifest(out / "manifest.json", plan.examples, train_set, val_set)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    close_loggers(trainer)
    if (tmp / TENSORBOARD).is_dir():  # report_to="tensorboard": the events stay with the adapter
        shutil.move(str(tmp / TENSORBOARD), str(out / TENSORBOARD))
    lora_runs.publish(tmp, plan.final_dir)
    lora_runs.db_finish(plan.run_id, "complete", metrics=metrics, adapter_path=plan.final_dir,
                        adapter_hash=adapter_hash(plan.final_dir))


def show(result: RunResult) -> None:
    from rich.console import Console
    from rich.table import Table
    m = result.metrics
    table = Table(title=f"train lora — run {result.run_id}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    first = m["steps"][0]["loss"] if m.get("steps") else None
    rows = [("status", result.status), ("optimizer steps", f"{m.get('first_step')} -> {m.get('last_step')}"),
            ("train loss (first -> last)", f"{_f(first)} -> {_f(m.get('final_loss'))}"),
            ("best eval loss", _f(m.get("best_eval_loss"))), ("final eval loss", _f(m.get("final_eval_loss"))),
            ("tokens / s", _f(m.get("tokens_per_s"))), ("training wall time (s)", _f(m.get("train_wall_s"))),
            ("examples", str(m.get("n_examples", ""))), ("resumed from", str(m.get("resumed_from") or "-")),
            ("adapter", str(result.adapter_dir or "-"))]
    for k, v in rows:
        table.add_row(k, v)
    console = Console()
    console.print(table)
    if result.error:
        from rich.markup import escape
        Console(stderr=True).print(f"[red]error:[/] {escape(result.error)}", highlight=False)


def _f(x) -> str:
    return "-" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)
