"""What SFT (train/lora.py) and DPO (train/dpo.py) trainers share: the device plan, the base model, the training
tokenizer, the LoRA config, the TrainingArguments, the callback list and the run's metrics.

Light at import (torch, transformers, TRL and PEFT load inside the functions), so that `python -m train lora --help`
and the plan stay fast; both trainer modules import this one and neither imports the other.
"""
from __future__ import annotations

import os
from pathlib import Path

from traces.settings import SettingsError

TEMPLATE = Path(__file__).parent / "templates" / "smollm2_train.jinja"


class QLoRAUnavailable(SettingsError):
    pass


# ---------- device and model ----------

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
        output_dir=str(out_dir), seed=s.seed, data_seed=s.seed, report_to=report_to(s), disable_tqdm=True,
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


def report_to(s) -> str | list[str]:
    """The report_to setting as transformers takes it: "none", or the list of integrations."""
    names = [n.strip() for n in s.report_to.split(",") if n.strip()]
    return "none" if names in ([], ["none"]) else names


def check_report_to(s) -> None:
    """Refuse before any model loads: "none" mixed with others, TensorBoard without its package."""
    import importlib.util
    names = [n.strip() for n in s.report_to.split(",") if n.strip()]
    if "none" in names and len(names) > 1:
        raise SettingsError(f"report_to={s.report_to!r}: 'none' cannot be combined with other integrations")
    if "tensorboard" in names and not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        raise SettingsError("report_to='tensorboard' needs the tensorboard package: pip install tensorboard "
                            "(`make setup` installs it)")


def close_loggers(trainer) -> None:
    """Close the TensorBoard writer (an evaluation after training opens it again) so every event is on disk."""
    for cb in trainer.callback_handler.callbacks:
        writer = getattr(cb, "tb_writer", None)
        if writer is not None:
            writer.close()
            cb.tb_writer = None


# ---------- the trainer ----------

def build(trainer_cls, config, s, base_folder: Path, out_dir: Path, sets, to_dataset, callbacks=(), progress=True,
          log_dir: Path | None = None, **extra):
    """A TRL trainer (SFTTrainer, DPOTrainer) on the base + a fresh LoRA adapter, with our callbacks.

    `config(s, out_dir, dev, has_val)` makes its TRL config, `to_dataset(items)` its dataset; `sets` is the
    (train, validation) split; `log_dir` is where report_to="tensorboard" writes its event files (unless
    TENSORBOARD_LOGGING_DIR says otherwise). Returns (trainer, NaN guard, metrics recorder)."""
    import datasets
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    if s.cpu_threads > 0:
        import torch
        torch.set_num_threads(s.cpu_threads)
    datasets.disable_progress_bars()  # a handful of map() calls; the rich bar is the one progress display
    dev = device_plan(s)
    model = load_base(base_folder, s, dev)
    train_set, val_set = sets
    guard, recorder, cbs = callback_list(s, bool(val_set), callbacks, progress)
    trainer = trainer_cls(model=model, args=config(s, out_dir, dev, bool(val_set)),
                          processing_class=training_tokenizer(base_folder), train_dataset=to_dataset(train_set),
                          eval_dataset=to_dataset(val_set) if val_set else None, peft_config=lora_config(s),
                          callbacks=cbs, **extra)
    for cb in (PrinterCallback, ProgressCallback):  # our rich bar replaces them
        trainer.remove_callback(cb)
    for cb in trainer.callback_handler.callbacks:  # transformers' default: output_dir/runs/<date>_<host>
        if type(cb).__name__ == "TensorBoardCallback" and cb.logging_dir is None and log_dir is not None:
            cb.logging_dir = str(log_dir)
    return trainer, guard, recorder


def callback_list(s, has_val: bool, callbacks=(), progress=True) -> tuple:
    """(NaN guard, metrics recorder, every callback): ours, the caller's, the progress bar, early stopping."""
    from transformers import EarlyStoppingCallback
    from train import lora_callbacks  # imports transformers: only once a trainer is built
    guard, recorder = lora_callbacks.NonFiniteGuard(), lora_callbacks.MetricsRecorder()
    cbs = [guard, recorder, *callbacks]
    if progress:
        cbs.append(lora_callbacks.RichProgress(recorder))
    if has_val and s.patience > 0:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=s.patience))
    return guard, recorder, cbs


# ---------- metrics ----------

def finish_metrics(trainer, recorder, plan) -> dict:
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
