"""python -m bench --only train — LoRA training tokens/s and peak RSS on this machine, mend vs TRL's defaults.

Same data (64 chat examples generated here, 30-300 tokens, some multi-turn), same base (the real 135M student),
same LoRA config (r=16, alpha 32, dropout 0.05, all linear layers), same number of optimizer steps, same batch
size (8). mend: `train.lora` with its settings (assistant-only loss, length-grouped batches, no activation
checkpointing). Baseline: TRL's SFTTrainer with its defaults except `use_cpu=True, bf16=False` (which a CPU needs):
full-sequence loss, random batches, activation checkpointing on. Each side runs in its own child process so its
peak RSS is its own; tokens/s counts non-padding input tokens from the second optimizer step to the last (the first
step pays one-time warm-up). Both sides run on one torch thread: on a 2-core machine shared with other work,
OpenMP barriers over 2 threads cost more than they gain (30x on small matmuls, measured).
Run directly: python -m bench.bench_train --side mend|trl --steps N --n N [--precision fp32|bf16].

Second pair of rows, CPU bf16: the same mend run with precision="bf16" (fp32 weights, bf16 autocast) against the
fp32 one above, tokens/s, peak RSS and the loss of the first and last step (a bf16 run must match fp32 within
tolerance to be worth its speed). Only on a CPU with amx_bf16 or avx512_bf16 (train/precision.py); elsewhere the
row says why it was skipped: without them bf16 autocast is slower than fp32, and precision="auto" trains fp32.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", bias="none", task_type="CAUSAL_LM")
WORDS = ("the model answers each request with care and keeps every sentence short so that a reader can follow "
         "rain falls on the quiet town while children walk to school past the old bakery on the corner "
         "numbers letters commas and titles are checked by the evaluation suite before any example is kept").split()


def make_examples(n: int, seed: int = 0) -> list[dict]:
    """Deterministic chat examples with a wide spread of lengths (what makes batching strategy matter)."""
    rng = random.Random(seed)
    text = lambda k: " ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + "."  # noqa: E731
    rows = []
    for i in range(n):
        msgs = [{"role": "user", "content": text(rng.randint(8, 40))},
                {"role": "assistant", "content": text(rng.choice([15, 40, 90, 180]))}]
        if i % 4 == 0:
            msgs += [{"role": "user", "content": text(10)}, {"role": "assistant", "content": text(40)}]
        rows.append({"id": f"b{i:03d}", "origin": "example", "messages": msgs})
    return rows


def run(quick: bool) -> list[dict]:
    steps, n = (2, 16) if quick else (6, 64)
    mend, trl = _child("mend", steps, n), _child("trl", steps, n)
    return _vs_trl(mend, trl, steps, n, quick) + bf16_rows(mend, steps, n)


def _vs_trl(mend: dict, trl: dict, steps: int, n: int, quick: bool) -> list[dict]:
    note = (f"SmolLM2-135M fp32 on CPU (1 torch thread), {n} examples, batch 8, {steps} steps; "
            f"tokens/s over steps 2..{steps}; "
            f"TRL SFTTrainer defaults + use_cpu, bf16=False; each side in its own process"
            + (" (quick)" if quick else ""))
    return [
        {"benchmark": "train", "metric": "LoRA training tokens/s (135M, CPU, r16 all-linear)",
         "mend": mend["tokens_per_s"], "baseline": trl["tokens_per_s"],
         "ratio": round(mend["tokens_per_s"] / trl["tokens_per_s"], 2), "target": ">= 1x TRL defaults",
         "notes": note},
        {"benchmark": "train", "metric": "LoRA training peak RSS, MiB",
         "mend": mend["peak_rss_mib"], "baseline": trl["peak_rss_mib"],
         "ratio": round(mend["peak_rss_mib"] / trl["peak_rss_mib"], 2), "target": "<= 1.2x TRL defaults",
         "notes": "ru_maxrss of each child process (model load + training)"},
    ]


def bf16_rows(fp32: dict, steps: int, n: int) -> list[dict]:
    """mend with bf16 autocast vs the fp32 child above; skipped with the reason on a CPU without native bf16."""
    from train.precision import cpu_bf16
    kind = cpu_bf16()
    common = {"benchmark": "train", "baseline": None, "target": "> 1x fp32, loss within 2%"}
    if kind is None:
        why = ("skipped: this CPU has neither amx_bf16 nor avx512_bf16 (AVX2 only); without them a bf16-autocast "
               "linear layer ran 7.4x slower than fp32 (train/precision.py), so precision=auto trains fp32 here")
        return [common | {"metric": "LoRA training tokens/s, CPU bf16 autocast vs fp32", "mend": None,
                          "baseline": fp32["tokens_per_s"], "ratio": None, "notes": why}]
    bf16 = _child("mend", steps, n, precision="bf16")
    rel = lambda key: abs(bf16[key] - fp32[key]) / abs(fp32[key])  # noqa: E731
    note = (f"SmolLM2-135M on CPU ({kind}), 1 torch thread, {n} examples, batch 8, {steps} steps, fp32 weights + "
            f"bf16 autocast vs fp32, each in its own process; loss step 1 fp32 {fp32['first_loss']:.4f} vs bf16 "
            f"{bf16['first_loss']:.4f} ({rel('first_loss'):.1%}), step {steps} {fp32['last_loss']:.4f} vs "
            f"{bf16['last_loss']:.4f} ({rel('last_loss'):.1%})")
    return [
        common | {"metric": "LoRA training tokens/s, CPU bf16 autocast vs fp32", "mend": bf16["tokens_per_s"],
                  "baseline": fp32["tokens_per_s"], "ratio": round(bf16["tokens_per_s"] / fp32["tokens_per_s"], 2),
                  "notes": note},
        common | {"metric": "LoRA training peak RSS, CPU bf16 autocast vs fp32, MiB", "mend": bf16["peak_rss_mib"],
                  "baseline": fp32["peak_rss_mib"], "ratio": round(bf16["peak_rss_mib"] / fp32["peak_rss_mib"], 2),
                  "target": "<= 1.1x fp32", "notes": "ru_maxrss of each child process (model load + training)"},
    ]


def _child(side: str, steps: int, n: int, precision: str = "fp32") -> dict:
    cmd = [sys.executable, "-m", "bench.bench_train", "--side", side, "--steps", str(steps), "--n", str(n),
           "--precision", precision]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        raise RuntimeError(f"bench_train --side {side} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------- one side, in a child process ----------

def _timer():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        """Tokens and seconds from the end of step 1 to the end of the last step."""
        t0 = tok0 = None
        t1 = tok1 = None

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            if state.global_step == 1:
                self.t0, self.tok0 = now, state.num_input_tokens_seen
            self.t1, self.tok1 = now, state.num_input_tokens_seen

        def rate(self) -> float:
            return round((self.tok1 - self.tok0) / (self.t1 - self.t0), 1)

    return Timer()


def side_mend(rows, steps: int, tmp: Path, precision: str = "fp32") -> tuple[float, dict]:
    os.environ["MEND_DB"] = str(tmp / "bench.duckdb")
    from traces.settings import load_with_sources
    from train.lora import make_plan, train
    path = tmp / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # precision pinned: the row against TRL is fp32 on both sides, whatever precision="auto" would pick here
    s, sources = load_with_sources("train", {"training_set": str(path), "adapters_dir": str(tmp / "adapters"),
                                             "max_steps": steps, "val_fraction": 0.0, "save_steps": 10_000,
                                             "precision": precision})
    timer = _timer()
    result = train(make_plan(s, sources), callbacks=[timer], progress=False)
    assert result.status == "complete", result.error
    losses = [st["loss"] for st in result.metrics["steps"]]
    return timer.rate(), {"first_loss": losses[0], "last_loss": losses[-1], "precision": result.metrics["precision"]}


def side_trl(rows, steps: int, tmp: Path, precision: str = "fp32") -> tuple[float, dict]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    from train.models import resolve
    folder = resolve("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder)
    # TRL's defaults, plus what a CPU needs, a step budget, no reporting, and the token count the rate needs
    args = SFTConfig(output_dir=str(tmp / "trl"), use_cpu=True, bf16=False, max_steps=steps, report_to="none",
                     save_strategy="no", disable_tqdm=True, include_num_input_tokens_seen="non_padding")
    timer = _timer()
    trainer = SFTTrainer(model=model, args=args, processing_class=tok, peft_config=LoraConfig(**LORA),
                         train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in rows]),
                         callbacks=[timer])
    trainer.train()
    return timer.rate(), {}


def _child_main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--side", choices=["mend", "trl"], required=True)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="mend side only")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    rows = make_examples(a.n)
    with tempfile.TemporaryDirectory() as tmp:
        rate, extra = (side_mend if a.side == "mend" else side_trl)(rows, a.steps, Path(tmp), a.precision)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"side": a.side, "tokens_per_s": rate, "peak_rss_mib": round(rss, 1), **extra}))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
