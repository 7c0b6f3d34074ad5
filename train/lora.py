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
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from traces.settings import SettingsError, as_dict, load_with_sources, resolve_path

TEMPLATE = Path(__file__).parent / "templates" / "smollm2_train.jinja"


class QLoRAUnavailable(SettingsError):
    pass


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
    from train import lora_data, lora_runs
    check_settings(settings)
    path = resolve_path(settings.training_set)
    settings = resolve_method(settings, path)
    examples = lora_data.read_training_set(path) if settings.method == "sft" else _dpo().read_items(settings, path)
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
    from train import lora_data
    pairs = _dpo().pairs_path(training_set)
    examples = {x.id for x in lora_data.read_training_set(training_set) if x.origin == "example"}
    paired = (_dpo().paired_examples(pairs) & examples) if pairs.is_file() else set()
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
        _dpo().check_method(s.method)
    if not 0 <= s.val_fraction < 1 or not 0 <= s.warmup_ratio < 1:
        raise SettingsError("val_fraction and warmup_ratio must be in [0, 1)")
    if s.lora_r < 1 or s.batch_size_train < 1 or s.grad_accum < 1 or s.max_length < 16 or s.save_steps < 1:
        raise SettingsError("lora_r, batch_size_train, grad_accum, save_steps must be >= 1 and max_length >= 16")


def device_plan(s) -> dict:
    """cuda / quantize / bf16 for this machine; QLoRA without CUDA is an error unless allow_cpu_fallback."""
    import torch
    cuda = torch.cuda.is_available()
    quantize = s.quantization == "nf4"
    if quantize and not cuda:
        if not s.allow_cpu_fallback:
            raise QLoRAUnavailable("QLoRA needs a CUDA GPU: quantization='nf4' loads the base in 4-bit through "
                                   "bitsandbytes, and no CUDA device is visible. Use quantization='none', or set "
                                   "allow_cpu_fallback=true (--allow-cpu-fallback) to train plain LoRA instead.")
        from rich.console import Console
        Console(stderr=True).print("[yellow]warning:[/] QLoRA needs a CUDA GPU; none is visible, so this run "
                                   "trains plain LoRA on the full-precision base (allow_cpu_fallback=true)")
        quantize = False
    from train.precision import choose
    bf16 = choose(s.precision, cuda)[0]  # CPU: bf16 autocast only with amx_bf16 / avx512_bf16
    return {"cuda": cuda, "quantize": quantize, "bf16": bf16}


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
    from train import lora_runs
    from train.models import fingerprint, resolve
    s, main_rank = plan.settings, is_main_process()
    tmp = lora_runs.tmp_dir(plan.adapters_dir, plan.run_id)
    base_folder = resolve(s.model)
    fp = fingerprint(base_folder)
    if main_rank:
        lora_runs.start_tmp(tmp, plan.run_id, plan.set_hash, plan.settings_hash)
        lora_runs.db_start(plan.run_id, s.model, fp, plan.training_set, plan.set_hash, as_dict(s), plan.examples)
    try:
        if s.method == "sft":
            trainer, guard, recorder = build_trainer(plan, base_folder, tmp, callbacks, progress)
            trainer.train(resume_from_checkpoint=str(plan.checkpoint) if plan.checkpoint else None)
        else:  # dpo, sft+dpo: train/dpo.py runs the phases
            trainer, guard, recorder = _dpo().fit(plan, base_folder, tmp, callbacks, progress)
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
    from train import lora_runs
    if is_main_process():
        if discard:  # its checkpoints lead to the same NaN: nothing there is worth resuming
            shutil.rmtree(tmp, ignore_errors=True)
        lora_runs.db_finish(plan.run_id, "failed", metrics=metrics, error=error)
    return RunResult(plan.run_id, "failed", None, metrics, error)


def build_trainer(plan: Plan, base_folder: Path, tmp: Path, callbacks=(), progress=True, sets=None):
    import datasets
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTTrainer
    from train import lora_callbacks, lora_data
    s = plan.settings
    if s.cpu_threads > 0:
        import torch
        torch.set_num_threads(s.cpu_threads)
    datasets.disable_progress_bars()  # a handful of map() calls; the rich bar is the one progress display
    dev = device_plan(s)
    model = load_base(base_folder, s, dev)
    tokenizer = training_tokenizer(base_folder)
    # sets: (train, validation) chosen by the caller (sft+dpo's SFT phase); else the split publish() records
    train_set, val_set = sets if sets is not None else lora_data.split(plan.examples, s.val_fraction, s.seed)
    guard, recorder = lora_callbacks.NonFiniteGuard(), lora_callbacks.MetricsRecorder()
    cbs = [guard, recorder, *callbacks]
    if progress:
        cbs.append(lora_callbacks.RichProgress(recorder))
    if val_set and s.patience > 0:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=s.patience))
    trainer = SFTTrainer(model=model, args=sft_config(s, tmp, dev, bool(val_set)), processing_class=tokenizer,
                         train_dataset=_dataset(train_set), eval_dataset=_dataset(val_set) if val_set else None,
                         peft_config=lora_config(s), callbacks=cbs)
    for cb in (PrinterCallback, ProgressCallback):  # our rich bar replaces them
        trainer.remove_callback(cb)
    return trainer, guard, recorder


def _dataset(examples):
    from datasets import Dataset
    return Dataset.from_list([{"messages": ex.messages} for ex in examples])


def load_base(folder: Path, s, dev: dict):
    """fp32 on CPU; bf16 on a GPU; 4-bit NF4 with bf16 compute for QLoRA."""
    import torch
    from transformers import AutoModelForCausalLM
    if dev["quantize"]:
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, dtype=torch.bfloat16,
                                                     device_map={"": int(os.environ.get("LOCAL_RANK", 0))})
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=s.gradient_checkpointing)
    dtype = torch.bfloat16 if dev["bf16"] and dev["cuda"] else torch.float32
    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)


def training_tokenizer(folder: Path):
    """The base tokenizer with a chat template whose {% generation %} markers cover each reply and its <|im_end|>."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "right"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if has_generation_markers(tok.chat_template or ""):
        return tok
    ours = TEMPLATE.read_text()
    if _renders_same(tok, ours):
        tok.chat_template = ours
        return tok
    try:  # another base model: TRL ships marked templates for the common families
        patched = get_training_chat_template(tok)
    except Exception as e:
        raise SettingsError(f"the chat template of {folder} has no {{% generation %}} markers and no training "
                            f"template is known for it ({e}); add one next to {TEMPLATE}") from None
    if patched:
        tok.chat_template = patched
    return tok


def _renders_same(tok, template: str) -> bool:
    probe = [[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
              {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}],
             [{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
              {"role": "assistant", "content": "b"}]]
    try:
        return all(tok.apply_chat_template(c, tokenize=False) ==
                   tok.apply_chat_template(c, tokenize=False, chat_template=template) for c in probe)
    except Exception:
        return False


def lora_config(s):
    from peft import LoraConfig
    targets = s.target_modules if s.target_modules == "all-linear" else \
        [m.strip() for m in s.target_modules.split(",") if m.strip()]
    return LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")


def trainer_args(s, out_dir: Path, dev: dict, has_val: bool) -> dict:
    """The TrainingArguments SFT and DPO share: device, batching, schedule, logging, checkpoints, evaluation."""
    return dict(
        output_dir=str(out_dir), seed=s.seed, data_seed=s.seed, report_to="none", disable_tqdm=True,
        log_level="warning", use_cpu=not dev["cuda"], bf16=dev["bf16"], fp16=False,
        per_device_train_batch_size=s.batch_size_train, per_device_eval_batch_size=s.batch_size_train,
        gradient_accumulation_steps=s.grad_accum, activation_checkpointing=s.gradient_checkpointing,
        learning_rate=s.lr, lr_scheduler_type="cosine", warmup_steps=s.warmup_ratio, weight_decay=s.weight_decay,
        num_train_epochs=s.epochs, max_steps=s.max_steps,
        # every step is logged so the NaN guard sees each loss (and must see it unfiltered)
        logging_steps=1, logging_nan_inf_filter=False, include_num_input_tokens_seen="non_padding",
        save_strategy="steps", save_steps=s.save_steps, save_total_limit=2,
        eval_strategy="steps" if has_val else "no", eval_steps=s.save_steps if has_val else None,
        load_best_model_at_end=has_val, metric_for_best_model="eval_loss" if has_val else None,
        greater_is_better=False if has_val else None,
        ddp_find_unused_parameters=False, dataloader_num_workers=0,
    )


def sft_config(s, tmp: Path, dev: dict, has_val: bool):
    from trl import SFTConfig
    return SFTConfig(
        **trainer_args(s, tmp, dev, has_val),
        # TRL: loss on the {% generation %} spans only; packing = best-fit padding-free blocks of max_length
        assistant_only_loss=True, max_length=s.max_length, packing=s.packing, packing_strategy="bfd",
        train_sampling_strategy="random" if s.packing else "group_by_length",
    )


# ---------- outputs ----------

def finish_metrics(trainer, recorder, plan: Plan) -> dict:
    metrics = recorder.summary()
    if trainer.eval_dataset is not None and not any(e["step"] == trainer.state.global_step for e in recorder.evals):
        final = trainer.evaluate()  # the (best, when load_best_model_at_end) adapter on the validation split
        metrics["final_eval_loss"] = final.get("eval_loss")
    elif recorder.evals:
        metrics["final_eval_loss"] = recorder.evals[-1]["eval_loss"]
    metrics["best_checkpoint"] = Path(trainer.state.best_model_checkpoint).name \
        if trainer.state.best_model_checkpoint else None
    metrics["stopped_early"] = trainer.state.global_step < trainer.state.max_steps
    metrics["resumed_from"] = plan.checkpoint.name if plan.checkpoint else None
    metrics["n_examples"] = len(plan.examples)
    metrics["precision"] = "bf16" if trainer.args.bf16 else "fp32"  # what precision="auto" chose on this machine
    return metrics


def publish(plan: Plan, trainer, tmp: Path, base_folder: Path, metrics: dict) -> None:
    import json
    from train import lora_data, lora_runs
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


def _dpo():
    from train import dpo  # light at import; torch/TRL load inside its functions
    return dpo


def _f(x) -> str:
    return "-" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)
