"""mend's student model: load (with or without a LoRA adapter), generate, embed; the LoRA trainer."""
