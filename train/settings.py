"""Settings of the `train` stage ([tool.mend.train], MEND_TRAIN_<KEY>)."""
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class TrainSettings:
    SIGNED: ClassVar[tuple] = ("max_steps",)  # number settings that may be negative (the loader refuses the rest)
    # --- student model and generation (owned by train/models.py, train/generate.py) ---
    model: str = "smollm2-135m-instruct"  # model ref: embedded default, local HF folder, or hub id
    max_new_tokens: int = 128  # the one token budget: sample traffic, eval regeneration, the gate, replay, and
    # synthesis while curate max_tokens is 0; one budget, so the gate can reuse the logged baseline
    batch_size: int = 16  # prompts per generation batch
    gen_threads: int = 0  # torch CPU threads when the student is loaded (0 = torch's default); set 1 on a shared,
    # oversubscribed CPU, where fewer threads generate faster (docs/benchmarks.md, "student generation threads")
    # --- LoRA trainer (owned by train/lora.py) ---
    training_set: str = "data/train/train.jsonl"  # OpenAI chat JSONL exported by `curate export` (+ .manifest.json)
    adapters_dir: str = "adapters"  # adapters/<run_id>/ is published here; adapters/.tmp-<run_id>/ while training
    lora_r: int = 16  # LoRA rank; 16 on all linear layers of the 135M student is ~4.9M trainable params
    lora_alpha: int = 32  # scaling = alpha / r = 2
    lora_dropout: float = 0.05  # dropout on the LoRA branch's input during training (PEFT's lora_dropout)
    target_modules: str = "all-linear"  # PEFT shorthand, or a comma-separated list of module names
    lr: float = 1e-4  # peak learning rate (AdamW), reached after warm-up, then cosine decay to 0; 1e-4: the sweep's
    # choice for on-policy SFT (3e-4 raised prose perplexity 12.6%; docs/results.md, 2026-12-06)
    epochs: float = 1.0  # passes over the training set (fractions allowed); 1: the sweep's choice on the default
    # nightly's own data (2026-12-07, docs/results.md): 2 epochs fixed more validation targets (19/0 vs 13/0) but made
    # 32 validation-traffic answers degenerate against 22 cured (+4.3 points), over the sweep's 2-point rule
    batch_size_train: int = 8  # sequences per device per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step (effective batch = batch_size_train * grad_accum * GPUs)
    warmup_ratio: float = 0.05  # share of the optimizer steps spent warming up linearly
    weight_decay: float = 0.0  # AdamW weight decay (only the LoRA weights train)
    max_length: int = 512  # tokens per training sequence; longer conversations are cut at the end
    packing: bool = False  # True: TRL best-fit packing, padding-free (pays off with flash-attention on a GPU); False: length-grouped batches (best on CPU)
    gradient_checkpointing: bool = True  # recompute activations in backward: slower, but without it the default batch
    # ran out of memory (docs/benchmarks.md, "activation checkpointing")
    val_fraction: float = 0.1  # share of examples held out for eval loss and early stopping (0 = none)
    patience: int = 3  # evaluations without a better eval loss before stopping early
    save_steps: int = 20  # optimizer steps between checkpoints (and evaluations); a killed run resumes from the last
    max_steps: int = -1  # stop after this many optimizer steps (-1 = run all epochs)
    seed: int = 0  # seeds the validation split (val_fraction), LoRA init, data order and dropout
    method: str = "sft"  # sft: what the sweep chose on on-policy data (docs/architecture.md, "Recipes") | "auto" (dpo when at least half of the exported examples have a preference pair, else sft: train.lora.resolve_method says why) | "sft" | "dpo" (DPO on the exported preference pairs, train/dpo.py) | "sft+dpo" (SFT, then DPO on the same adapter; epochs/max_steps/lr apply to each phase)
    dpo_sft_weight: float = 0.0  # > 0: add TRL's "sft" loss (NLL of the chosen answer) to the DPO loss with this
    # weight (RPO, Pang et al. 2024), against DPO lowering the chosen answers' likelihood too; 0: it did not help on
    # the demo's validation split (docs/results.md, HEAD 8c74693)
    dpo_beta: float = 0.5  # DPO beta: how strongly the policy is held to the reference (the base, adapter disabled).
    # 0.5 as SmolLM2-135M-Instruct's own DPO (HF alignment-handbook recipes/smollm2); TRL's default 0.1 let the demo's
    # adapters drift far from the reference and loop (docs/benchmarks.md, "DPO beta 0.1")
    dpo_loss: str = "sigmoid"  # TRL's DPOConfig loss_type: sigmoid (DPO) | apo_zero (raises the chosen answers'
    # likelihood, lowers the rejected ones': no displacement of the chosen) | ipo | ... (see TRL's DPOConfig)
    quantization: str = "none"  # "none" | "nf4" (QLoRA: 4-bit NF4 base through bitsandbytes, bf16 compute; needs CUDA)
    allow_cpu_fallback: bool = False  # with quantization="nf4" and no CUDA: train plain LoRA with a warning instead of failing
    precision: str = "auto"  # "auto" (bf16 on a CUDA GPU that supports it, bf16 autocast on a CPU with amx_bf16/avx512_bf16, else fp32: train/precision.py) | "bf16" | "fp32"
    num_processes: int = 0  # with >1 visible GPU, re-run through `accelerate launch` with this many (0 = one per GPU)
    fsdp: bool = False  # with `accelerate launch`: shard with FSDP instead of plain data parallel
    cpu_threads: int = 0  # torch threads when training on CPU (0 = torch's default); 1 can beat 2 on a busy machine
    report_to: str = "none"  # where the trainer also logs its loss and learning rate: "none" | "tensorboard" (event
    # files in the adapter folder's tensorboard/<phase>/: `tensorboard --logdir adapters`) | any other integration of
    # transformers' `report_to` (wandb, mlflow, ...; its package installed), several comma-separated
