"""python -m curate export [--out PATH] [--format F] [--push-to-hub REPO] [--replay-fraction F] ... — the training set

Writes data/train/train.jsonl (settings train_out) and train.manifest.json beside it, atomically:
- every accepted example: `{"id", "origin": "example", "messages": [...prompt messages, assistant response]}`;
- a replay share (settings replay_fraction of the total), against forgetting, of which `replay_self_share` is
  self-distilled (curate/replay.py: the base student's own greedy answers to instruction-free seed requests,
  generated once and cached in `self_replay`; `{"id": "self-<key>", "origin": "replay", "source": "self", ...}`)
  and the rest seed traces whose logged responses passed every check in the latest complete logged eval run of
  each suite — the model's own good behaviour on real traffic: `{"id": trace_id, "origin": "replay", ...}`.
  When one kind runs short the other fills the share. Both are `replay` to the trainer (train.lora_data.ORIGINS).
The manifest lists ids, origins (`example`, `replay`, `self`) and content hashes (train.lora_data.content_hash)
plus counts.

Beside it, `pairs.jsonl` (train.dpo.pairs_path), for `python -m train lora --method dpo|sft+dpo`: the preference pairs
of the accepted examples (the `preference_pairs` view, docs/schema.md) in TRL's conversational preference format,
`{"id", "prompt": [messages], "chosen": [assistant message], "rejected": [assistant message]}` plus lineage
(`example_id`, `cluster_id`, `rejected_source` production|teacher, `rejected_id` trace or candidate id). Only
accepted examples give pairs, so a pair's prompt passed the same dedup, decontamination and review as the SFT set;
the manifest lists them under `pairs` (path, sha256, count, items with content hashes, train.dpo.pair_hash).

`--format datasets` writes the same set and pairs as a Hugging Face `datasets` folder instead
(data/train/train-dataset/, splits `sft` and `pairs`, the manifest inside; `--push-to-hub REPO` uploads it);
`--format openai` as OpenAI fine-tuning JSONL (data/train/train.openai.jsonl + train.openai.pairs.jsonl). See
curate/formats.py.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
from pathlib import Path

from rich.console import Console

from traces import settings as settings_mod
from curate.formats import _atomic, _jsonl  # the one atomic writer of curate's files
from traces import store


def accepted(con) -> list[dict]:
    """`group` is the split key of the seed trace the example was made from (its own id when none): what a
    validation split (curate/loop/sweep.py) keeps on one side."""
    rows = con.execute("""SELECT e.example_id, e.messages, e.response, coalesce(t.group_key, e.example_id),
                                 e.cluster_id, e.strategy = 'repair' AND list_contains(?, c.check_id), c.check_id
                          FROM examples e LEFT JOIN traces t ON t.trace_id = e.seed_trace_id
                          LEFT JOIN clusters c ON c.cluster_id = e.cluster_id
                          WHERE e.status = 'accepted' ORDER BY e.cluster_id, e.example_id""",
                       [sorted(LAYOUT_CHECKS)]).fetchall()
    return [{"id": r[0], "origin": "example", "group": r[3], "cluster": r[4], "layout": bool(r[5]), "check": r[6],
             "messages": _with_answer(json.loads(r[1]), r[2])} for r in rows]


def capped(examples: list[dict], prefs: list[dict], cap: int) -> tuple[list[dict], list[dict]]:
    """At most `cap` examples, taken from every cluster in turn (so no cluster is left out), each cluster's own
    order being: examples with a preference pair first (the DPO method trains on pairs only), then a hash of the
    id (stable, unbiased). A capped set keeps one pair per example (production's failing answer first), so DPO
    trains on at most `cap` pairs too. cap <= 0 or enough room: everything, unchanged."""
    if cap <= 0 or len(examples) <= cap:
        return examples, prefs
    paired = {p["example_id"] for p in prefs}
    by_cluster: dict = {}
    for x in sorted(examples, key=lambda x: (x["id"] not in paired, hashlib.sha256(x["id"].encode()).hexdigest())):
        by_cluster.setdefault(x["cluster"], []).append(x)
    turns = itertools.zip_longest(*(by_cluster[c] for c in sorted(by_cluster)))  # one of each cluster per turn
    ids, first = {x["id"] for x in itertools.islice((x for turn in turns for x in turn if x), cap)}, {}
    for p in prefs:  # prefs are ordered production before teacher for each example
        if p["example_id"] in ids:
            first.setdefault(p["example_id"], p)
    return [x for x in examples if x["id"] in ids], [p for p in prefs if first.get(p["example_id"]) is p]


def replay_pool(con) -> list[dict]:
    """Seed traces that passed every check of the latest complete logged run of each suite."""
    rows = con.execute("""
        WITH latest AS (
            SELECT run_id FROM (
                SELECT run_id, row_number() OVER (PARTITION BY suite ORDER BY finished_at DESC, run_id DESC) AS rk
                FROM eval_runs WHERE mode = 'logged' AND status = 'complete') WHERE rk = 1),
        verdict AS (
            SELECT trace_id, bool_and(passed) AS all_passed FROM run_results
            WHERE run_id IN (SELECT run_id FROM latest) GROUP BY trace_id)
        SELECT t.trace_id, t.messages, t.response, t.group_key FROM traces t JOIN verdict v USING (trace_id)
        WHERE v.all_passed AND t.split = 'seed' AND t.response IS NOT NULL AND length(trim(t.response)) > 0
        ORDER BY sha256(t.trace_id)""").fetchall()
    # ordered by a hash of the id: a stable, unbiased pick that does not change when traces are added
    return [{"id": r[0], "origin": "replay", "group": r[3], "messages": _with_answer(json.loads(r[1]), r[2])}
            for r in rows]


# The checks curate/synth/repair_layout.py repairs by regrouping (dividers, section headers, paragraphs, bullets):
# export sits below synth, so it names them here (tests/test_pairs.py keeps the two lists equal). Their repair pairs
# put the whole DPO margin on the inserted "***" and "SECTION k", and the adapters trained on them looped on exactly
# those tokens; they stay SFT targets, never preference pairs.
LAYOUT_CHECKS = frozenset({"length_constraints:number_paragraphs", "length_constraints:nth_paragraph_first_word",
                           "detectable_format:multiple_sections", "detectable_format:number_bullet_lists",
                           "combination:two_responses"})


def pairs(con, max_similarity: float | None = None) -> list[dict]:
    """Preference pairs whose chosen response is an accepted example, in a stable order; without layout repairs'
    pairs and near-identical pairs (word-sequence similarity above `pair_max_similarity`). The rejected side is
    trimmed to whole sentences like every chosen side (production's answers were cut by their token budget)."""
    from evals.quality import trim_truncated
    if max_similarity is None:
        max_similarity = settings_mod.load("curate").pair_max_similarity
    rows = con.execute("""
        SELECT p.pair_id, p.messages, p.chosen, p.rejected, p.chosen_example_id, p.cluster_id, p.rejected_source,
               coalesce(p.rejected_example_id, p.rejected_trace_id), c.check_id, e.strategy
        FROM preference_pairs p JOIN clusters c USING (cluster_id) JOIN examples e ON e.example_id = p.chosen_example_id
        WHERE p.chosen_status = 'accepted'
        ORDER BY p.cluster_id, p.chosen_example_id, p.rejected_source, p.pair_id""").fetchall()
    out = []
    for pid, messages, chosen, rejected, eid, cid, source, rid, check, strategy in rows:
        prompt = _with_answer(json.loads(messages), None)
        rejected = trim_truncated(rejected, "length") if source == "production" else rejected
        if not (prompt and prompt[-1]["role"] == "user"):
            continue  # not a generation prompt: the pair's answers must follow a user turn
        if (strategy == "repair" and check in LAYOUT_CHECKS) or similarity(chosen, rejected) > max_similarity:
            continue
        out.append({"id": pid, "prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}], "example_id": eid,
                    "cluster_id": cid, "rejected_source": source, "rejected_id": rid})
    return out


def similarity(a: str, b: str) -> float:
    """Share of the two answers' words in common, in order (difflib ratio over word sequences, 0..1). In a pair
    the shared words cancel in DPO's log-ratio, so a pair 95% alike puts the whole margin on 5% of its tokens
    (likelihood displacement with similar pairs: Razin et al. 2024); token overlap is cheap and says exactly that."""
    import difflib
    return difflib.SequenceMatcher(None, a.split(), b.split(), autojunk=False).ratio()


def _with_answer(messages: list, response: str | None) -> list:
    msgs = [{"role": m["role"], "content": m.get("content") or ""} for m in messages
            if m.get("role") in ("system", "user", "assistant")]
    return msgs if response is None else msgs + [{"role": "assistant", "content": response}]


def replay_count(n_examples: int, fraction: float, available: int) -> int:
    """Replays so that they are `fraction` of the whole set: r / (n + r) = f -> r = n f / (1 - f)."""
    if n_examples == 0 or fraction <= 0:
        return 0
    if fraction >= 1:
        return available
    return min(available, round(n_examples * fraction / (1 - fraction)))


def content_hash(messages: list) -> str:
    from train.lora_data import content_hash as train_hash  # the trainer's own definition (light module)
    return train_hash(messages)


def build(replay_fraction: float, self_share: float = 0.0, exclude_groups=frozenset(),
          answerer=None, max_examples: int = 0, layout_targets: bool = True,
          only_checks: frozenset | None = None) -> tuple[list[dict], dict, list[dict]]:
    """Accepted examples (at most `max_examples`, see capped; without layout repairs unless `layout_targets`; only
    the clusters of `only_checks` when given) + replay (passing traffic and self-distilled answers, `self_share` of
    the replay rows), leaving out every item whose group is in `exclude_groups` (a sweep's validation part)."""
    from curate import replay as self_replay
    with store.connect(read_only=True) as con:
        examples, pool, prefs = accepted(con), replay_pool(con), pairs(con)
        requests = self_replay.base_requests(con, exclude_groups) if self_share > 0 else []
    examples = [x for x in examples if x["group"] not in exclude_groups and (layout_targets or not x["layout"])
                and (only_checks is None or x["check"] in only_checks)]
    pool = [x for x in pool if x["group"] not in exclude_groups]
    kept = {x["id"] for x in examples}
    prefs = [p for p in prefs if p["example_id"] in kept]
    accepted_n = len(examples)
    examples, prefs = capped(examples, prefs, max_examples)
    total = replay_count(len(examples), replay_fraction, len(pool) + len(requests))
    # too little passing traffic: self-distilled rows fill the share (requests is empty when self_share is 0)
    n_self = min(len(requests), max(round(total * self_share), total - len(pool)))
    selfs = self_replay.self_items(requests, n_self, answerer)
    replay = pool[:total - len(selfs)]  # and passing traffic fills in for answers cut at the token budget
    items = examples + replay + selfs
    counts = {"example": len(examples), "replay": len(replay), "self": len(selfs), "total": len(items),
              "replay_available": len(pool), "self_available": len(requests), "pairs": len(prefs),
              "accepted": accepted_n}
    return items, counts, prefs


def _line(it: dict) -> dict:
    """A training-set line; a self-distilled row is `replay` to the trainer, with its source named."""
    if it["origin"] == "self":
        return {"id": it["id"], "origin": "replay", "source": "self", "messages": it["messages"]}
    return {"id": it["id"], "origin": it["origin"], "messages": it["messages"]}


def write(items: list[dict], counts: dict, out: Path, replay_fraction: float, prefs: list[dict] = (),
          replay_self_share: float = 0.0) -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    from train.dpo import pairs_path
    from train.lora_data import manifest_path
    pairs_out = pairs_path(out)
    manifest, data, pair_data = _manifest(items, counts, out.name, pairs_out.name, replay_fraction, prefs,
                                          replay_self_share)
    _atomic(out, data)
    _atomic(pairs_out, pair_data)
    _atomic(manifest_path(out), json.dumps(manifest, indent=1).encode())  # last: it vouches for both files
    return manifest


def _manifest(items: list[dict], counts: dict, name: str, pairs_name: str, replay_fraction: float,
              prefs: list[dict], replay_self_share: float) -> tuple[dict, bytes, bytes]:
    """(manifest, the training set's JSONL bytes, pairs.jsonl's bytes): `sha256` is always that of the JSONL, so
    a `datasets` export of the same set has the same one."""
    from train.dpo import pair_hash
    data, pair_data = _jsonl(_line(it) for it in items), _jsonl(prefs)
    manifest = {
        "path": name, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "sha256": hashlib.sha256(data).hexdigest(), "replay_fraction": replay_fraction,
        "replay_self_share": replay_self_share, "counts": counts,
        "items": [{"id": it["id"], "origin": it["origin"], "content_hash": content_hash(it["messages"])}
                  for it in items],
    }
    manifest["pairs"] = {  # always written (maybe empty): a stale pairs file never sits beside a new SFT set
        "path": pairs_name, "sha256": hashlib.sha256(pair_data).hexdigest(), "count": len(prefs),
        "items": [{"id": p["id"], "content_hash": pair_hash(p["prompt"], p["chosen"], p["rejected"]),
                   "example_id": p["example_id"], "cluster_id": p["cluster_id"],
                   "rejected_source": p["rejected_source"], "rejected_id": p["rejected_id"]} for p in prefs]}
    return manifest, data, pair_data


def write_dataset(items: list[dict], counts: dict, folder: Path, replay_fraction: float, prefs: list[dict] = (),
                  replay_self_share: float = 0.0) -> dict:
    """The same set and pairs as a `datasets` folder (curate/formats.py), its manifest inside."""
    from curate import formats
    from train.lora_data import PAIRS_SPLIT
    manifest, _, _ = _manifest(items, counts, folder.name, f"{folder.name}[{PAIRS_SPLIT}]", replay_fraction,
                               list(prefs), replay_self_share)
    return formats.write_dataset([_line(it) for it in items], list(prefs), manifest, folder)


FORMATS = ("jsonl", "datasets", "openai")


def default_out(train_out: Path, fmt: str) -> Path:
    """Where each format goes by default, beside settings train_out (data/train/train.jsonl): the JSONL set itself,
    data/train/train-dataset/, data/train/train.openai.jsonl."""
    from curate.formats import openai_path
    stem = train_out.name.removesuffix(".jsonl")
    return {"jsonl": train_out, "datasets": train_out.with_name(f"{stem}-dataset"),
            "openai": openai_path(train_out)}[fmt]


def export(out: str | None = None, replay_fraction: float | None = None,
           replay_self_share: float | None = None, fmt: str = "jsonl", push_to_hub: str | None = None,
           public: bool = False, exclude_groups=frozenset(), only_checks: frozenset | None = None) -> dict:
    """Build the training set and write it in `fmt` (FORMATS); `push_to_hub` (a `datasets` export only) uploads
    it as that dataset repo, private unless `public`; `exclude_groups`: the nightly's validation split."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if push_to_hub and fmt != "datasets":
        raise ValueError("--push-to-hub uploads a `datasets` export: use it with --format datasets")
    from train import hub
    token = hub.token() if push_to_hub else None  # before the build: no token, no waiting for a set
    s = settings_mod.load("curate", {"replay_fraction": replay_fraction, "replay_self_share": replay_self_share})
    path = settings_mod.resolve_path(out) if out else default_out(settings_mod.resolve_path(s.train_out), fmt)
    items, counts, prefs = build(s.replay_fraction, s.replay_self_share, exclude_groups,
                                 max_examples=s.max_train_examples,
                                 layout_targets=s.layout_targets, only_checks=only_checks)
    if fmt == "openai":
        from curate.formats import write_openai
        return write_openai(items, prefs, path) | {"format": fmt, "counts": counts}
    writer = write_dataset if fmt == "datasets" else write
    manifest = writer(items, counts, path, s.replay_fraction, prefs, s.replay_self_share)
    result = manifest | {"out": str(path), "format": fmt}
    if push_to_hub:
        from curate.formats import push_dataset
        result["pushed"] = push_dataset(path, push_to_hub, token, private=not public)
        result["repo"] = push_to_hub
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m curate export", description=__doc__.split("\n")[0])
    p.add_argument("--out", help="where to write (default: settings train_out for jsonl; beside it, "
                                 "<name>-dataset/ for datasets, <name>.openai.jsonl for openai)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="jsonl: the trainer's set, pairs and manifest (default); datasets: the same as a Hugging "
                        "Face `datasets` folder (splits sft and pairs; `train lora` trains on it too); openai: "
                        "OpenAI fine-tuning JSONL (messages + tools) and its preference pairs")
    p.add_argument("--push-to-hub", metavar="REPO",
                   help="upload the `datasets` export to this Hub dataset repo (needs HF_TOKEN; implies "
                        "--format datasets)")
    p.add_argument("--public", action="store_true", help="with --push-to-hub: a public repo (default: private)")
    p.add_argument("--replay-fraction", type=float, help="share of replayed seed traffic (settings replay_fraction)")
    p.add_argument("--replay-self-share", type=float,
                   help="share of the replay rows that are the base's own answers (settings replay_self_share)")
    args = p.parse_args(argv)
    fmt = args.format or ("datasets" if args.push_to_hub else "jsonl")
    if args.push_to_hub and fmt != "datasets":
        p.error("--push-to-hub uploads a `datasets` export: use it with --format datasets")
    from train.hub import HubError
    try:
        m = export(args.out, args.replay_fraction, args.replay_self_share, fmt, args.push_to_hub, args.public)
    except (HubError, FileExistsError) as e:
        from rich.markup import escape
        Console(stderr=True).print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        return 2
    c = m["counts"]
    if fmt == "openai":
        Console().print(f"wrote {m['out']}: {m['lines']} conversation(s) ({m['with_tools']} with tools) and "
                        f"{m['pairs']} preference pair(s) in {m['pairs_out']}, OpenAI fine-tuning format"
                        + (f"; {m['text_only']} line(s) whose request's tool turns do not form a valid sequence "
                           "carry the training set's text turns only" if m["text_only"] else ""), highlight=False)
    else:
        of = f" (of {c['accepted']}: max_train_examples)" if c["accepted"] > c["example"] else ""
        Console().print(f"wrote {m['out']}: {c['example']} accepted example(s){of} + {c['replay']} replay "
                        f"(of {c['replay_available']} passing seed traces) + {c['self']} self-distilled (of "
                        f"{c['self_available']} instruction-free seed requests), {c['pairs']} preference pair(s) in "
                        f"{m['pairs']['path']}; manifest " + ("inside" if fmt == "datasets" else "beside it"))
    if m.get("pushed"):
        Console().print(f"pushed to https://huggingface.co/datasets/{m['repo']}: config(s) {', '.join(m['pushed'])}"
                        f" ({'public' if args.public else 'private'})", highlight=False)
    if c["example"] == 0:
        Console(stderr=True).print("[yellow]warning:[/] no accepted examples (run synth, filter, accept or review)")
    return 0
