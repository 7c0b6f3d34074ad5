"""Vectorized dedup and decontamination kernels (numpy), used by `python -m curate filter` and bench_dedup.

Every function takes the *new* batch in order (first occurrence wins) plus a reference set (examples
accepted before, or eval/holdout prompts) and returns, per new item, the index it collides with (-1: keep).
Conventions follow datasketch / lm-eval:
- exact: sha256 of the normalized text (lower-case, whitespace collapsed).
- near: MinHash over word shingles, LSH with (bands, rows) chosen for the Jaccard threshold the way
  datasketch's MinHashLSH does, then the estimated Jaccard (share of equal signature rows) >= threshold.
  Instead of one Python MinHash object per text, words are hashed in polars, shingles become uint64
  hashes in numpy, and one-permutation MinHash with densification fills all signatures in one pass.
- semantic: cosine of L2-normalized embeddings above a threshold: exact blocked matrix products for small
  sets; for large ones, random-hyperplane LSH (16-bit bands) proposes candidates, checked exactly.
- ngram: lm-eval's decontamination idea: lower-case words without punctuation, any shared 13-gram.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

_WORDS = re.compile(r"[a-z0-9]+")
EXACT_LIMIT = 50_000_000
CHUNK_SHINGLES = 1 << 20  # shingles hashed per chunk (bounds memory)
THREADS = 2  # numpy releases the GIL in ufuncs: the MinHash blocks run in parallel  # new x reference pairs compared exactly before switching to LSH candidates


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def exact_keys(texts: list[str]) -> list[str]:
    return [hashlib.sha256(normalize(t).encode()).hexdigest() for t in texts]


def exact_dups(new: list[str], ref: list[str] = ()) -> np.ndarray:
    """-1 keep; i < len(ref): collides with ref[i]; else len(ref)+j: with the earlier new item j."""
    seen: dict[str, int] = {k: i for i, k in reversed(list(enumerate(exact_keys(list(ref)))))}
    out = np.full(len(new), -1, dtype=np.int64)
    for j, k in enumerate(exact_keys(new)):
        if k in seen:
            out[j] = seen[k]
        else:
            seen[k] = len(ref) + j
    return out


# ------------------------------------------------------------------ MinHash

def word_ids(texts: list[str], vocab: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint64 word hashes of all texts (lower-case [a-z0-9]+ words) and each text's start offset.
    Hashing in polars (Rust, all cores) instead of a Python dict; `vocab` is accepted for compatibility."""
    import polars as pl
    words = pl.Series(list(texts), dtype=pl.Utf8).fill_null("").str.to_lowercase().str.extract_all(_WORDS.pattern)
    lengths = words.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = words.explode().drop_nulls()
    ids = flat.hash(seed=0).to_numpy().astype(np.uint64) if len(flat) else np.zeros(0, np.uint64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
    return ids, starts


def shingle_hashes(ids: np.ndarray, starts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """uint64 hash of every k-word window inside each text (a text shorter than k gives one window of
    what it has); returns (hashes, owner text index)."""
    n_texts = len(starts)
    lengths = np.diff(np.append(starts, len(ids)))
    n_win = np.maximum(lengths - k + 1, 1)
    n_win[lengths == 0] = 0
    owner = np.repeat(np.arange(n_texts), n_win)
    first = np.repeat(starts, n_win) + (np.arange(n_win.sum()) - np.repeat(np.cumsum(n_win) - n_win, n_win))
    end = np.repeat(starts + lengths, n_win)
    h = np.zeros(len(first), dtype=np.uint64)
    padded = np.append(ids, np.uint64(0)).astype(np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            idx = first + j
            valid = idx < end
            w = np.where(valid, padded[np.minimum(idx, len(ids))], np.uint64(0)) + np.uint64(1)
            h = h * np.uint64(1_000_003) + w * valid.astype(np.uint64)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return h, owner


def kperm_signatures(texts: list[str], num_perm: int = 128, k: int = 5, seed: int = 1,
                     vocab: dict | None = None) -> np.ndarray:
    """(N, num_perm) uint32 MinHash with num_perm hash functions (the classic form, kept for comparison;
    `signatures` is the one-permutation version, ~same accuracy, one pass). Empty text: all-max."""
    ids, starts = word_ids(texts, vocab)
    h, owner = shingle_hashes(ids, starts, k)
    rng = np.random.RandomState(seed)
    # multiply-shift hashing (a odd, 64-bit, wrapping): top 32 bits of a*h+b. No modulo, and unlike
    # (a*h+b) mod p with small a it does not keep the order of h (which would make every row agree)
    a = rng.randint(0, 1 << 62, size=num_perm, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.randint(0, 1 << 62, size=num_perm, dtype=np.int64).astype(np.uint64)
    sig = np.full((len(texts), num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    if len(h) == 0:
        return sig
    seg_starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    texts_with = owner[seg_starts]
    # chunks of whole texts with <= CHUNK_SHINGLES shingles; per chunk, permutations in blocks of 16 laid out
    # (16, shingles) so reduceat runs along contiguous memory; a reused buffer (16 x 1M x 8 B = 128 MB per
    # thread); two threads, as numpy ufuncs release the GIL
    cuts = np.searchsorted(seg_starts, np.arange(0, len(h), CHUNK_SHINGLES), side="left")
    cuts = np.unique(np.append(cuts, len(seg_starts)))

    def chunk(ci):
        s0, s1 = cuts[ci], cuts[ci + 1]
        lo = seg_starts[s0]
        hi = seg_starts[s1] if s1 < len(seg_starts) else len(h)
        hc, local = h[lo:hi], seg_starts[s0:s1] - lo
        buf = np.empty((16, hi - lo), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for p0 in range(0, num_perm, 16):
                p1 = min(num_perm, p0 + 16)
                view = buf[:p1 - p0]
                np.multiply(a[p0:p1, None], hc[None, :], out=view)
                view += b[p0:p1, None]
                view >>= np.uint64(32)
                sig[texts_with[s0:s1], p0:p1] = np.minimum.reduceat(view, local, axis=1).T
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(chunk, range(len(cuts) - 1)))
    return sig


def signatures(texts: list[str], num_perm: int = 128, k: int = 5, seed: int = 1,
               vocab: dict | None = None) -> np.ndarray:
    """(N, num_perm) uint32 one-permutation MinHash (Li, Owen & Zhang 2012) with rotation densification
    (Shrivastava & Li 2014): one hash per shingle, split into num_perm bins by its high bits, the minimum
    of the low bits kept per bin; an empty bin borrows the next non-empty bin's value plus an offset per
    step. The share of equal bins estimates Jaccard like num_perm independent permutations do, at the cost
    of one pass over the shingles instead of num_perm."""
    ids, starts = word_ids(texts, vocab)
    h, owner = shingle_hashes(ids, starts, k)
    n, B = len(texts), num_perm
    MAX = np.iinfo(np.uint32).max
    sig = np.full(n * B, MAX, dtype=np.uint32)
    if len(h):
        with np.errstate(over="ignore"):
            h = (h ^ np.uint64(seed * 0x9E3779B97F4A7C15 % (1 << 64))) * np.uint64(0xD6E8FEB86659FD93)
            h ^= h >> np.uint64(32)
        bins = ((h >> np.uint64(32)) % np.uint64(B)).astype(np.int64)
        vals = (h & np.uint64(0xFFFFFFFE)).astype(np.uint32)  # even: MAX (odd) stays "empty"
        # minimum per (text, bin): sort (slot << 32 | value) once and keep each slot's first entry
        comp = (((owner * B + bins).astype(np.uint64)) << np.uint64(32)) | vals.astype(np.uint64)
        comp.sort()
        slot = (comp >> np.uint64(32)).astype(np.int64)
        first = np.r_[True, slot[1:] != slot[:-1]]
        sig[slot[first]] = (comp[first] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    sig = sig.reshape(n, B)
    empty = sig == MAX
    if empty.any():
        cols = np.arange(B)
        idx = np.where(empty, 4 * B, cols[None, :])
        doubled = np.concatenate([idx, np.where(empty, 4 * B, cols[None, :] + B)], axis=1)
        nxt = np.minimum.accumulate(doubled[:, ::-1], axis=1)[:, ::-1][:, :B]
        fill = empty & (nxt < 2 * B)  # rows with no shingle at all stay MAX (they match nothing real)
        r, c = np.nonzero(fill)
        with np.errstate(over="ignore"):
            sig[r, c] = sig[r, nxt[r, c] % B] + (nxt[r, c] - c).astype(np.uint32) * np.uint32(0x9E3779B1)
    return sig


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimizing false positives + false negatives, as datasketch's _optimal_param."""
    from datasketch.lsh import _optimal_param
    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def near_dups(new_sig: np.ndarray, ref_sig: np.ndarray | None, threshold: float) -> np.ndarray:
    """Indices as in exact_dups: each new item's earliest similar reference or earlier new item."""
    ref_sig = np.zeros((0, new_sig.shape[1]), dtype=new_sig.dtype) if ref_sig is None else ref_sig
    allsig = np.vstack([ref_sig, new_sig])
    n_ref, n_all = len(ref_sig), len(allsig)
    bands, rows = lsh_params(threshold, allsig.shape[1])
    cand_i, cand_j = [], []
    order = np.arange(n_all)
    mult = np.random.RandomState(3).randint(1, 1 << 62, size=rows, dtype=np.int64).astype(np.uint64) | np.uint64(1)
    for band in range(bands):
        # one uint64 key per band (a random linear combination of its rows): sorting integers is much
        # faster than sorting byte strings; a key collision only adds a candidate, checked below
        key = np.zeros(n_all, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for r in range(rows):
                key += allsig[:, band * rows + r].astype(np.uint64) * mult[r]
        rep = _bucket_first(key)  # the bucket's first member (lowest index)
        hit = rep < order
        cand_i.append(order[hit])
        cand_j.append(rep[hit])
    return _resolve(cand_i, cand_j, n_ref, n_all, lambda i, j: (allsig[i] == allsig[j]).mean(axis=1) >= threshold)


def _bucket_first(key: np.ndarray) -> np.ndarray:
    """For each item, the lowest index with the same key (one stable argsort)."""
    order = np.argsort(key, kind="stable")
    k = key[order]
    starts = np.r_[True, k[1:] != k[:-1]]
    group_first = order[np.flatnonzero(starts)]
    rep = np.empty(len(key), dtype=np.int64)
    rep[order] = np.repeat(group_first, np.diff(np.r_[np.flatnonzero(starts), len(k)]))
    return rep


def _resolve(cand_i, cand_j, n_ref, n_all, similar) -> np.ndarray:
    """Keep candidate pairs (i later than j) that are similar; new item i -> the earliest j."""
    out = np.full(n_all - n_ref, -1, dtype=np.int64)
    if not cand_i:
        return out
    i = np.concatenate(cand_i)
    j = np.concatenate(cand_j)
    keep = (i >= n_ref) & (j < i)
    i, j = i[keep], j[keep]
    if len(i) == 0:
        return out
    pair = np.unique(i * n_all + j)  # one int64 per pair: 1-D unique is far cheaper than rows
    i, j = pair // n_all, pair % n_all
    ok = np.zeros(len(i), dtype=bool)
    for s in range(0, len(i), 200_000):
        ok[s:s + 200_000] = similar(i[s:s + 200_000], j[s:s + 200_000])
    i, j = i[ok], j[ok]
    best = np.full(n_all, n_all, dtype=np.int64)
    np.minimum.at(best, i, j)
    hit = best[n_ref:] < n_all
    out[hit] = best[n_ref:][hit]
    return out


# ------------------------------------------------------------------ semantic

def semantic_dups(new_emb: np.ndarray, ref_emb: np.ndarray | None, threshold: float,
                  within: bool = True, block: int = 4096) -> np.ndarray:
    """Each new item's earliest reference (or, with `within`, earlier new item) with cosine > threshold."""
    ref_emb = np.zeros((0, new_emb.shape[1]), dtype=np.float32) if ref_emb is None else ref_emb
    allemb = np.vstack([ref_emb, new_emb]).astype(np.float32, copy=False)
    n_ref, n_all = len(ref_emb), len(allemb)
    pairs = len(new_emb) * (n_ref + (len(new_emb) if within else 0))
    if pairs <= EXACT_LIMIT:
        i, j = _exact_pairs(allemb, n_ref, threshold, within, block)
    else:
        i, j = _hyperplane_pairs(allemb, n_ref, within)
    sim = lambda a, b: np.einsum("ij,ij->i", allemb[a], allemb[b]) > threshold  # noqa: E731
    return _resolve([i], [j], n_ref, n_all, sim)


def _exact_pairs(allemb, n_ref, threshold, within, block):
    ii, jj = [], []
    for s in range(n_ref, len(allemb), block):
        rows = allemb[s:s + block]
        upto = s + len(rows) if within else n_ref
        sims = rows @ allemb[:upto].T
        r, c = np.nonzero(sims > threshold)
        r = r + s
        keep = c < r
        ii.append(r[keep])
        jj.append(c[keep])
    if not ii:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ii), np.concatenate(jj)


def _hyperplane_pairs(allemb, n_ref, within, bands: int = 32, bits: int = 16, seed: int = 7):
    """Candidate pairs whose sign patterns agree on one of `bands` 16-bit bands. At cosine 0.95
    (18 degrees) a bit agrees with p=0.9, a band with 0.9^16=0.185, some band of 32 with 99.9%."""
    rng = np.random.RandomState(seed)
    planes = rng.standard_normal((allemb.shape[1], bands * bits)).astype(np.float32)
    weights = (1 << np.arange(bits)).astype(np.int64)
    order = np.arange(len(allemb))
    ii, jj = [], []
    bits_all = np.empty((len(allemb), bands), dtype=np.int64)
    for s in range(0, len(allemb), 20_000):
        proj = allemb[s:s + 20_000] @ planes > 0
        bits_all[s:s + 20_000] = proj.reshape(len(proj), bands, bits).astype(np.int64) @ weights
    for band in range(bands):
        rep = _bucket_first(bits_all[:, band])
        hit = rep < order
        if not within:
            hit &= rep < n_ref
        ii.append(order[hit])
        jj.append(rep[hit])
    return np.concatenate(ii), np.concatenate(jj)


# ------------------------------------------------------------------ n-gram decontamination

def ngram_hashes(texts: list[str], n: int = 13, vocab: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, owner) of every n-word window (texts shorter than n give none: nothing to overlap)."""
    ids, starts = word_ids(texts, vocab)
    lengths = np.diff(np.append(starts, len(ids)))
    long_enough = lengths >= n
    if not long_enough.any():
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    h, owner = shingle_hashes(ids, starts, n)
    keep = long_enough[owner]
    return h[keep], owner[keep]


def ngram_contaminated(new: list[str], ref: list[str], n: int = 13, shared: list[str] = ()) -> np.ndarray:
    """Per new text: index of a reference text sharing an n-gram with it, else -1. N-grams that also occur
    in `shared` texts (the seed traffic synthesis may draw from) are not evidence: they are templates common
    to both splits, such as an instruction's own sentence ("... in all lowercase letters. No capital letters
    are allowed."), which every prompt with that instruction carries."""
    out = np.full(len(new), -1, dtype=np.int64)
    if not ref or not new:
        return out
    vocab: dict = {}
    rh, rown = ngram_hashes(ref, n, vocab)
    if len(shared) and len(rh):
        keep = ~np.isin(rh, ngram_hashes(list(shared), n, vocab)[0])
        rh, rown = rh[keep], rown[keep]
    nh, nown = ngram_hashes(new, n, vocab)
    if len(rh) == 0 or len(nh) == 0:
        return out
    order = np.argsort(rh, kind="stable")
    rh, rown = rh[order], rown[order]
    pos = np.searchsorted(rh, nh)
    pos_c = np.minimum(pos, len(rh) - 1)
    hit = rh[pos_c] == nh
    first = np.full(len(new), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, nown[hit], rown[pos_c[hit]])
    found = first < np.iinfo(np.int64).max
    out[found] = first[found]
    return out
