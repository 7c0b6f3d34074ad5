"""curate filter: each dedup path (exact, near_duplicate, semantic) with its reason and duplicate_of,
within the batch and against examples kept before; plus the numpy kernels against datasketch."""

import numpy as np
import pytest
from builders.examples import STORY, add, bag_embed, state

from curate import dedup
from curate import filters


@pytest.fixture(autouse=True)
def cheap_embedder(monkeypatch):
    monkeypatch.setattr(filters, "embed_texts", bag_embed)


def test_exact_near_semantic_within_batch():
    words = STORY.split()
    add("a", "Tell a story.", STORY, created="2026-01-01 00:00:01")
    add("b", "tell a  story.", STORY.upper(), created="2026-01-01 00:00:02")  # exact after normalization
    add("c", "Tell a story.", STORY + " the end", created="2026-01-01 00:00:03")  # near
    add("d", "Tell a story.", " ".join(words[::-1]), created="2026-01-01 00:00:04")  # same words, new order
    add("e", "Write a poem about tea.", "warm cups and quiet mornings make the day begin gently",
        created="2026-01-01 00:00:05")
    filters.run_filters()
    s = state()
    assert s["a"][:3] == ("pending_review", None, None)
    assert s["b"][:3] == ("duplicate", "exact", "a")
    assert s["c"][0] == "duplicate" and s["c"][1].startswith("near_duplicate: jaccard") and s["c"][2] == "a"
    assert s["d"][0] == "duplicate" and s["d"][1].startswith("semantic: cosine") and s["d"][2] == "a"
    assert s["e"][0] == "pending_review"
    assert all(v[3] for v in s.values())  # embeddings stored, computed once


def test_against_examples_accepted_before():
    add("old", "Tell a story.", STORY, status="accepted")
    add("new", "Tell a story.", STORY)
    filters.run_filters()
    assert state()["new"][:3] == ("duplicate", "exact", "old")


def test_nothing_to_filter_is_fine():
    assert filters.run_filters() == {}


def test_numpy_minhash_agrees_with_datasketch():
    from datasketch import MinHash
    a = STORY
    b = STORY.replace("owls", "birds").replace("river", "stream")
    sig = dedup.signatures([a, b], num_perm=256, k=5)
    ours = (sig[0] == sig[1]).mean()

    def ds(t):
        m = MinHash(num_perm=256)
        w = t.split()
        for i in range(len(w) - 4):
            m.update(" ".join(w[i:i + 5]).encode())
        return m
    assert ours == pytest.approx(ds(a).jaccard(ds(b)), abs=0.12)


def test_semantic_lsh_path_finds_planted_pairs(monkeypatch):
    rng = np.random.RandomState(0)
    e = rng.standard_normal((3000, 384)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    noisy = e[:50] + 0.01 * rng.standard_normal((50, 384)).astype(np.float32)
    e = np.vstack([e, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)])
    monkeypatch.setattr(dedup, "EXACT_LIMIT", 0)
    got = dedup.semantic_dups(e, None, 0.95)
    assert (got[3000:] == np.arange(50)).mean() > 0.95 and (got[:3000] == -1).all()
