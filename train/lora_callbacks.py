"""Trainer callbacks of `python -m train lora`: NaN/inf guard, metrics record, progress (bar or log lines)."""
from __future__ import annotations

import contextlib
import math
import time

from transformers import TrainerCallback

from train.lora_runs import PREFERENCE_KEYS
from traces.progress import progress as bars


class NonFiniteLoss(RuntimeError):
    pass


class NonFiniteGuard(TrainerCallback):
    """Stop at the first NaN/inf train or eval loss, before that step is checkpointed (logging_steps must be 1)."""

    def __init__(self):
        self.failure: str | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "eval_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                self.failure = (f"{key} became {value} at step {state.global_step}: training stopped, "
                                "no adapter published (lower lr, check the data)")
                control.should_training_stop = True
                control.should_save = False  # never checkpoint a poisoned state: a resume would start from it
                control.should_evaluate = False
        return control


class MetricsRecorder(TrainerCallback):
    """Train/eval loss per step, tokens and tokens/s (and DPO's reward figures); what metrics.json is built from.

    Tokens are the Trainer's non-padding input count (`include_num_input_tokens_seen="non_padding"`), which a
    checkpoint restores; rates cover this session only, from its first optimizer step.
    """

    def __init__(self):
        self.steps: list[dict] = []
        self.evals: list[dict] = []
        self.start: tuple[float, int] | None = None  # (time, tokens) at this session's first step
        self.last: tuple[float, int] | None = None
        self.first_step: int | None = None  # > 0 when resumed from a checkpoint

    def on_step_begin(self, args, state, control, **kwargs):
        if self.start is None:
            self.start = self.last = (time.perf_counter(), state.num_input_tokens_seen)
            self.first_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "eval_loss" in logs:
            self.evals.append({"step": state.global_step, "eval_loss": logs["eval_loss"]})
        elif "loss" in logs and self.last is not None:
            now, tokens = time.perf_counter(), state.num_input_tokens_seen
            rate = (tokens - self.last[1]) / max(now - self.last[0], 1e-9)
            self.last = (now, tokens)
            self.steps.append({"step": state.global_step, "loss": logs["loss"], "lr": logs.get("learning_rate"),
                               "grad_norm": logs.get("grad_norm"), "tokens": tokens, "tokens_per_s": round(rate, 1),
                               **{k: logs[k] for k in PREFERENCE_KEYS if k in logs}})

    def summary(self) -> dict:
        start = self.start or (time.perf_counter(), 0)
        last = self.last or start
        wall = max(last[0] - start[0], 1e-9)
        evals = [e["eval_loss"] for e in self.evals]
        return {"steps": self.steps, "evals": self.evals, "train_wall_s": round(wall, 2),
                "train_tokens": last[1], "session_tokens": last[1] - start[1],
                "tokens_per_s": round((last[1] - start[1]) / wall, 1),
                "first_step": self.first_step, "last_step": self.steps[-1]["step"] if self.steps else None,
                "final_loss": self.steps[-1]["loss"] if self.steps else None,
                "best_eval_loss": min(evals) if evals else None,
                **{k: self.steps[-1][k] for k in PREFERENCE_KEYS if self.steps and k in self.steps[-1]}}


class RichProgress(TrainerCallback):
    """Progress over optimizer steps with the last loss and tokens/s (replaces transformers' tqdm/printer): a rich
    bar on a terminal, plain lines every few seconds in a log (traces.progress)."""

    def __init__(self, recorder: MetricsRecorder, console=None):
        self.recorder, self.console = recorder, console
        self.progress = None
        self.task = None
        self._open = contextlib.ExitStack()  # the display lives from on_train_begin to on_train_end

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.progress = self._open.enter_context(bars(self.console))
        self.task = self.progress.add_task("[bold]lora", total=state.max_steps, completed=state.global_step,
                                           info="")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None:
            return
        last = self.recorder.steps[-1] if self.recorder.steps else None
        ev = self.recorder.evals[-1]["eval_loss"] if self.recorder.evals else None
        info = f"loss {last['loss']:.4f}  {last['tokens_per_s']:.0f} tok/s" if last else ""
        if ev is not None:
            info += f"  eval {ev:.4f}"
        self.progress.update(self.task, completed=state.global_step, info=info)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self._open.close()
            self.progress = None
