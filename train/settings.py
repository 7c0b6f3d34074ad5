"""Settings of the `train` stage ([tool.mend.train], MEND_TRAIN_<KEY>)."""
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainSettings:
    # --- student model and generation (owned by train/models.py, train/generate.py) ---
    model: str = "smollm2-135m-instruct"  # model ref: embedded default, local HF folder, or hub id
    max_new_tokens: int = 256  # greedy eval generation and sample traffic use the same budget
    batch_size: int = 16  # prompts per generation batch
    # --- LoRA trainer (owned by train/lora.py) ---
