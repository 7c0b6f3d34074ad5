"""Training sets, settings and plans for the trainer tests on the tiny model."""
import json
from pathlib import Path

from traces.settings import load_with_sources

TURNS = [
    [{"role": "user", "content": "Reply without commas: list three fruits."},
     {"role": "assistant", "content": "Apples pears and plums."}],
    [{"role": "system", "content": "You answer in lowercase."},
     {"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "paris is the capital of france."},
     {"role": "user", "content": "And of Italy?"},
     {"role": "assistant", "content": "rome."}],
    [{"role": "user", "content": "End your reply with 'Is there anything else?'"},
     {"role": "assistant", "content": "The sky is blue. Is there anything else?"}],
    [{"role": "user", "content": "Write a title in double angular brackets."},
     {"role": "assistant", "content": "<<A Quiet Morning>>\nThe town woke slowly."}],
]


def write_set(folder: Path, n: int = 8, manifest: bool = True) -> Path:
    rows = [{"id": f"ex{i:03d}", "origin": "replay" if i % 4 == 3 else "example", "messages": TURNS[i % len(TURNS)]}
            for i in range(n)]
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if manifest:
        from train.lora_data import content_hash
        items = [{"id": r["id"], "origin": r["origin"], "content_hash": content_hash(r["messages"])} for r in rows]
        (folder / "train.manifest.json").write_text(json.dumps({"items": items}))
    return path


def settings(tmp_path, tiny_model_dir, training_set, **over):
    flags = {"model": str(tiny_model_dir), "training_set": str(training_set), "adapters_dir": str(tmp_path / "ad"),
             "batch_size_train": 4, "max_length": 128, "save_steps": 2, "lr": 5e-3, "val_fraction": 0.0,
             "max_steps": 4, "warmup_ratio": 0.0}
    flags.update(over)
    return load_with_sources("train", flags)


def plan_for(tmp_path, tiny_model_dir, n=8, **over):
    from train.lora import make_plan
    s, sources = settings(tmp_path, tiny_model_dir, write_set(tmp_path, n), **over)
    return make_plan(s, sources)


def db_rows(sql, params=()):
    from traces.store import connect
    with connect(read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()
