"""Long stages off a terminal (cron, a log file): generation, LoRA training, scoring, embedding and client calls
print plain progress lines (done/total, rate, ETA) while they run, not only at the end (traces.progress)."""
import io
import re

import pytest
import rich
from rich.console import Console

from traces import progress as progress_mod

LINE = re.compile(r"(?P<label>[^:\n]+): (?P<done>\d+)/(?P<total>\d+) \(\d+%\) [\d.]+/s "
                  r"(ETA -|ETA [\d:]+|done in [\d:]+)")


def lines(text: str, label: str) -> list[tuple[int, int]]:
    """(done, total) of each progress line of `label`."""
    return [(int(m["done"]), int(m["total"])) for m in LINE.finditer(text) if m["label"].endswith(label)]


@pytest.fixture
def log(monkeypatch):
    """A console that is not a terminal, as rich's global one (the default of every stage), and a line on every
    update: the tests see each step without waiting EVERY_S seconds."""
    out = io.StringIO()
    monkeypatch.setattr(rich, "_console", Console(file=out, width=300, force_terminal=False))
    monkeypatch.setattr(progress_mod, "EVERY_S", 0.0)
    return out




def test_generation_prints_lines_between_batches(log, tiny_model_dir, monkeypatch, one_thread):
    from train import generate as tg
    from train.models import load
    model, tok = load(tiny_model_dir, device="cpu")
    seen = []  # the log as each batch starts: what a reader of the cron log had by then
    real = tg._generate_batch
    monkeypatch.setattr(tg, "_generate_batch", lambda *a: (seen.append(log.getvalue()), real(*a))[1])
    convs = [[{"role": "user", "content": f"Say {i}."}] for i in range(6)]
    tg.generate(model, tok, convs, max_new_tokens=2, batch_size=2)
    assert lines(seen[2], "generating") == [(0, 6), (2, 6), (4, 6)]  # before the last batch ran
    assert "ETA" in seen[2].splitlines()[-1]
    assert re.search(r"^generating: 6/6 \(100%\) [\d.]+/s done in", log.getvalue(), re.M)


def test_lora_training_prints_lines_with_loss_between_steps(tmp_path, tiny_model_dir, monkeypatch, one_thread):
    from builders.lora import plan_for
    from transformers import TrainerCallback

    from train.lora import build_trainer
    from train.lora_callbacks import RichProgress
    from train.models import resolve
    plan = plan_for(tmp_path, tiny_model_dir, n=4, max_steps=4)
    trainer, _, recorder = build_trainer(plan, resolve(plan.settings.model), tmp_path / "tmp", progress=False)
    out = io.StringIO()
    monkeypatch.setattr(progress_mod, "EVERY_S", 0.0)
    seen = []

    class Snapshot(TrainerCallback):  # after RichProgress: the log as each step's line has been printed
        def on_log(self, args, state, control, **kwargs):
            seen.append(out.getvalue())

    trainer.add_callback(RichProgress(recorder, Console(file=out, width=300, force_terminal=False)))
    trainer.add_callback(Snapshot())
    trainer.train()
    assert lines(seen[1], "lora") == [(0, 4), (1, 4), (2, 4)]  # halfway through, two steps already logged
    assert re.search(r"^lora: 2/4 \(50%\) [\d.]+/s ETA [\d:]+ · loss \d+\.\d{4}  \d+ tok/s$", seen[1], re.M)
    assert lines(out.getvalue(), "lora")[-1] == (4, 4)


def test_scoring_prints_lines_and_the_last_partial_chunk(monkeypatch):
    from evals import runner
    out = io.StringIO()
    monkeypatch.setattr(runner, "console", Console(file=out, width=300, force_terminal=False))
    monkeypatch.setattr(progress_mod, "EVERY_S", 0.0)
    seen = {}
    for i in runner._progress(list(range(550)), True, "scoring suite"):
        if i == 450:
            seen["midway"] = out.getvalue()
    assert lines(seen["midway"], "scoring suite") == [(0, 550), (200, 550), (400, 550)]
    assert lines(out.getvalue(), "scoring suite")[-1] == (550, 550)  # the 150 after the last 200 count too


def test_client_calls_print_lines(log):
    from openai_stub import OpenAIStub

    from evals.client import Client
    with OpenAIStub() as stub:
        calls = Client(stub.base_url, "stub-model", purpose="judge", max_retries=0).complete_many(
            [{"messages": [{"role": "user", "content": f"q{i}"}], "seed": i} for i in range(4)], progress=True)
    assert all(c.error is None for c in calls)
    assert lines(log.getvalue(), "judge calls") == [(i, 4) for i in range(5)]


def test_embedding_prints_lines_between_chunks(log, monkeypatch):
    from train import embed as em
    model = em._model()
    seen = []
    real = model.encode
    monkeypatch.setattr(model, "encode", lambda chunk, **kw: (seen.append(log.getvalue()), real(chunk, **kw))[1])
    vecs = em.embed([f"text {i}" for i in range(10)], batch_size=1, progress=True)  # chunks of 4
    assert vecs.shape == (10, em.DIM)
    assert lines(seen[2], "embedding") == [(0, 10), (4, 10), (8, 10)]
    assert lines(log.getvalue(), "embedding")[-1] == (10, 10)


def test_extra_fields_on_lines_and_bars_and_a_resumed_rate():
    clock = iter([0.0, 10.0]).__next__
    out = io.StringIO()
    bar = progress_mod.PlainProgress(Console(file=out, width=300), every_s=5.0, clock=clock)
    task = bar.add_task("lora", total=100, completed=50, info="")  # resumed at step 50
    bar.update(task, completed=60, info="loss 1.2345")
    assert out.getvalue().splitlines()[-1] == "lora: 60/100 (60%) 1.0/s ETA 0:00:40 · loss 1.2345"
    tty = Console(file=io.StringIO(), force_terminal=True, width=200)
    with progress_mod.progress(tty) as bars:
        bars.update(bars.add_task("lora", total=2, info=""), advance=1, info="loss 2.5000")
    assert "loss 2.5000" in tty.file.getvalue()
