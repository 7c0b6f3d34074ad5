"""Run bookkeeping for `python -m train lora`: run ids, the temporary folder, resume, publish, DuckDB rows.

adapters/.tmp-<run_id>/ holds `run.json` (what the run is: training-set and settings hashes) and the Trainer's
checkpoints; the finished adapter is assembled in adapters/.tmp-<run_id>/publish/ and renamed to
adapters/<run_id>/ in one step, so a reader never sees a half-written adapter.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path

from traces.settings import as_dict

PREFERENCE_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected")
# TRL's DPO figures, kept per step and last value in the summary: a margin of many nats is a push far from the
# reference, and a falling logps/chosen is likelihood displacement (the chosen answers made less likely too)

# settings that do not change what is trained (so a resume with a different value is still the same run)
_NOT_IDENTITY = {"max_new_tokens", "batch_size", "adapters_dir", "training_set", "num_processes", "cpu_threads",
                 "report_to"}


def settings_hash(settings) -> str:
    keep = {k: v for k, v in as_dict(settings).items() if k not in _NOT_IDENTITY}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def new_run_id(set_hash: str) -> str:
    return f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{set_hash[:8]}"


def tmp_dir(adapters_dir: Path, run_id: str) -> Path:
    return adapters_dir / f".tmp-{run_id}"


def last_checkpoint(folder: Path) -> Path | None:
    ckpts = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
             and (p / "trainer_state.json").is_file()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1]), default=None)


def find_resumable(adapters_dir: Path, set_hash: str, s_hash: str) -> tuple[str, Path] | None:
    """The newest unfinished run of this training set and settings that left a checkpoint: (run_id, checkpoint)."""
    found = []
    for folder in adapters_dir.glob(".tmp-*"):
        try:
            info = json.loads((folder / "run.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        ckpt = last_checkpoint(folder)
        if ckpt and info.get("training_set_hash") == set_hash and info.get("settings_hash") == s_hash:
            found.append((folder.stat().st_mtime, info["run_id"], ckpt))
    if not found:
        return None
    _, run_id, ckpt = max(found)
    return run_id, ckpt


def start_tmp(folder: Path, run_id: str, set_hash: str, s_hash: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    info = {"run_id": run_id, "training_set_hash": set_hash, "settings_hash": s_hash}
    (folder / "run.json").write_text(json.dumps(info, indent=1) + "\n")


def publish(tmp: Path, final: Path) -> Path:
    """tmp/publish/ -> final, atomically; then drop the checkpoints."""
    if final.exists():
        raise FileExistsError(f"{final} already exists: refusing to overwrite a published adapter")
    os.rename(tmp / "publish", final)
    shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------- DuckDB (short connections: never held while training) ----------

def db_start(run_id: str, base_ref: str, fingerprint: str, training_set: Path, set_hash: str,
             settings: dict, examples) -> None:
    import pyarrow as pa
    from traces.store import connect, transaction
    rows = pa.table({"run_id": [run_id] * len(examples), "item_id": [ex.id for ex in examples],
                     "origin": [ex.origin for ex in examples],
                     "content_hash": [ex.content_hash for ex in examples]})
    with connect() as con, transaction(con):
        # a resumed run keeps its row and its example list (same training-set hash by construction)
        con.execute("""INSERT INTO train_runs (run_id, base_model, base_fingerprint, training_set,
                         training_set_hash, settings, status, started_at)
                       VALUES (?, ?, ?, ?, ?, ?, 'running', now())
                       ON CONFLICT (run_id) DO UPDATE SET status = 'running', error = NULL, finished_at = NULL""",
                    [run_id, base_ref, fingerprint, str(training_set), set_hash, json.dumps(settings)])
        con.register("new_examples", rows)
        con.execute("""INSERT INTO train_examples SELECT run_id, item_id, origin, content_hash FROM new_examples
                       ON CONFLICT DO NOTHING""")
        con.unregister("new_examples")


def db_finish(run_id: str, status: str, metrics: dict | None = None, adapter_path: Path | None = None,
              adapter_hash: str | None = None, error: str | None = None) -> None:
    from traces.store import connect
    with connect() as con:
        con.execute("""UPDATE train_runs SET status = ?, metrics = ?, adapter_path = ?, adapter_hash = ?,
                         error = ?, finished_at = now() WHERE run_id = ?""",
                    [status, json.dumps(_summary(metrics)) if metrics else None,
                     str(adapter_path) if adapter_path else None, adapter_hash, error, run_id])


def _summary(metrics: dict) -> dict:
    """The per-step lists live in the adapter's metrics.json; the row keeps the headline figures."""
    return {k: v for k, v in metrics.items() if k not in ("steps", "evals")}
