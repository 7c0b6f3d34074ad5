"""python -m evals sample-traffic --n N [--seed S] [--out PATH] — the student answering N prompts, as a log.

Writes an OpenAI Chat Completions JSONL log (gzipped when PATH ends in .gz) as a team would have logged its
production assistant: one line per call, `{"id", "created", "model", "request": {...}, "response": {...},
"metadata": {...}}`. Each prompt is one of the 150 base requests in evals/base_requests.py plus 1-3 verifiable
instructions built from lm-evaluation-harness's IFEval instruction registry through evals/ifeval.py (each
instruction's `build_description` with random arguments, conflicting pairs skipped), the way IFEval was built.
`metadata` holds `base_id` (the split group key), `instruction_id_list`, `kwargs` (so the checks can run later)
and the generation settings. Responses are greedy with the eval settings, so they are the production baseline.

Deterministic for a seed: prompt i depends only on (seed, i), timestamps are derived from the seed, batches are
fixed by the prompt order and --batch-size, and gzip output carries no mtime. Same machine type and thread
count -> the same bytes (float reductions may differ across CPU kinds).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
from pathlib import Path

from evals import ifeval
from evals.base_requests import BASE_REQUESTS
from traces.settings import load as load_settings, resolve_path
from train.generate import Generation, gen_settings, generate
from train.models import fingerprint, load as load_model

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are the writing assistant of a small marketing agency. Be clear and friendly.",
    "You are a support assistant for a software company. Answer carefully.",
    "You help employees of a logistics firm with everyday writing tasks.",
]
SYSTEM_SHARE = 0.3  # share of calls whose client sent a system prompt
START_EPOCH = 1767225600  # 2026-01-01T00:00:00Z; the log spans the following days
MEAN_GAP_S = 90  # mean seconds between logged calls
WINDOW = 16  # prompts per checkpointed window (one default batch); batches are sorted by length within a window


def build_prompts(n: int, seed: int = 0) -> list[dict]:
    """n prompt specs: {"base_id", "messages", "instruction_id_list", "kwargs"}; prompt i depends on (seed, i)."""
    ids, conflicts = sorted(ifeval.registry()), ifeval.conflicts()
    return [_one_prompt(i, seed, ids, conflicts) for i in range(n)]


def _one_prompt(i: int, seed: int, registry_ids: list[str], conflicts: dict) -> dict:
    # prompt i draws everything (base, instructions, lm-eval's builder arguments) from the global `random`
    # seeded by (seed, i); str seeds hash with sha512: stable across processes
    with ifeval.seeded_random(f"mend-traffic:{seed}:{i}"):
        return _draw_prompt(registry_ids, conflicts)


def _draw_prompt(registry_ids: list[str], conflicts: dict) -> dict:
    base_id, base = random.choice(BASE_REQUESTS)
    ids: list[str] = []
    want = random.choice([1, 1, 2, 2, 3])
    for _ in range(want):
        # conflicts are listed one way only in lm-eval (json_format conflicts with almost everything): check both
        free = [c for c in registry_ids
                if c not in ids and not any(c in conflicts[x] or x in conflicts[c] for x in ids)]
        if not free:
            break
        ids.append(random.choice(free))
    built = [ifeval.new_instruction(iid, base) for iid in ids]  # [(description, kwargs)]
    descriptions, kwargs = [d for d, _ in built], [k for _, k in built]
    messages = [{"role": "user", "content": base + " " + " ".join(descriptions)}]
    if random.random() < SYSTEM_SHARE:
        messages.insert(0, {"role": "system", "content": random.choice(SYSTEM_PROMPTS)})
    return {"base_id": base_id, "messages": messages, "instruction_id_list": ids, "kwargs": kwargs}


def log_lines(specs: list[dict], gens: list, model_name: str, gen: dict, max_tokens: int, seed: int) -> list[str]:
    """One OpenAI Chat Completions log line per (prompt spec, generation)."""
    rng = random.Random(f"mend-traffic-times:{seed}")
    created, lines = START_EPOCH, []
    for i, (spec, g) in enumerate(zip(specs, gens)):
        created += 1 + int(rng.expovariate(1 / MEAN_GAP_S))
        call_id = "chatcmpl-" + hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()[:24]
        request = {"model": model_name, "messages": spec["messages"], "temperature": 0, "max_tokens": max_tokens}
        response = {"id": call_id, "object": "chat.completion", "created": created, "model": model_name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                                 "finish_reason": g.finish_reason}],
                    "usage": {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                              "total_tokens": g.prompt_tokens + g.completion_tokens}}
        metadata = {"base_id": spec["base_id"], "instruction_id_list": spec["instruction_id_list"],
                    "kwargs": spec["kwargs"], "generation": gen}
        line = {"id": call_id, "created": created, "model": model_name, "request": request,
                "response": response, "metadata": metadata}
        lines.append(json.dumps(line, ensure_ascii=False))
    return lines


def write_lines(lines: list[str], out: Path) -> None:
    """Write atomically; .gz output has mtime 0 and no file name, so the bytes depend only on the content."""
    out.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    if out.suffix == ".gz":
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
            gz.write(data)
        data = buf.getvalue()
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)


def sample_traffic(n: int, seed: int, out: Path, model_ref: str, max_new_tokens: int, batch_size: int,
                   progress: bool = True, first_window: int = 0) -> Path | None:
    """Generate in windows of WINDOW prompts, checkpointing each, so a killed run resumes and N=k*WINDOW
    reproduces the first k*WINDOW lines of any larger N with the same seed."""
    specs = build_prompts(n, seed)
    key = {"seed": seed, "model": model_ref, "fingerprint": fingerprint(model_ref), "max_new_tokens": max_new_tokens,
           "batch_size": batch_size, "window": WINDOW}
    ckpt = out.parent / (".sample-traffic-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode())
                         .hexdigest()[:16] + ".partial.jsonl")
    gens = _generate_windows(specs, key, ckpt, progress, first_window)
    if None in gens:
        return None  # a helper process (first_window > 0): its windows are in the checkpoint
    gen = {**gen_settings(max_new_tokens=max_new_tokens), "model": model_ref}
    name = model_ref if not resolve_path(model_ref).is_dir() else Path(model_ref).name
    write_lines(log_lines(specs, gens, name, gen, max_new_tokens, seed), out)
    ckpt.unlink(missing_ok=True)
    return out


def _generate_windows(specs: list[dict], key: dict, ckpt: Path, progress: bool, first_window: int = 0) -> list:
    """Generations for every window from the checkpoint or the model; windows before first_window are left
    to another process sharing the checkpoint (then None is returned for them)."""
    model = tok = None
    gens: list = []
    for w, start in enumerate(range(0, len(specs), WINDOW)):
        window = specs[start:start + WINDOW]
        done = _read_checkpoint(ckpt).get(w, [])  # re-read: another process may have finished it meanwhile
        if len(done) == len(window):  # finished earlier (same seed, model and settings)
            gens += [Generation(**g) for g in done]
            continue
        if w < first_window:
            gens += [None] * len(window)
            continue
        if model is None:
            model, tok = load_model(key["model"])
        new = generate(model, tok, [s["messages"] for s in window], max_new_tokens=key["max_new_tokens"],
                       batch_size=key["batch_size"], progress=progress)
        _append_checkpoint(ckpt, w, new)
        gens += new
    return gens


def _read_checkpoint(path: Path) -> dict[int, list[dict]]:
    """{window: [generation dicts]}; a window counts only when its closing marker line was written."""
    if not path.is_file():
        return {}
    done, pending = {}, {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if "done" in rec:
            done[rec["done"]] = pending.pop(rec["done"], [])
        else:
            pending.setdefault(rec.pop("window"), []).append(rec)
    return done


def _append_checkpoint(path: Path, window: int, gens: list) -> None:
    import dataclasses
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"window": window, **dataclasses.asdict(g)}, ensure_ascii=False) for g in gens]
    block = ("\n".join(lines + [json.dumps({"done": window, "size": len(gens)})]) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:  # one O_APPEND write per window: processes sharing the checkpoint never interleave inside a window
        os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)


def main(argv=None) -> int:
    settings = load_settings("train")
    p = argparse.ArgumentParser(prog="python -m evals sample-traffic", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=40, help="number of logged calls (default 40)")
    p.add_argument("--seed", type=int, default=0, help="prompt/timestamp seed (default 0)")
    p.add_argument("--out", default="data/inbox/sample-traffic.jsonl", help="output JSONL (.gz to compress)")
    p.add_argument("--model", default=settings.model, help=f"model ref (default {settings.model})")
    p.add_argument("--max-new-tokens", type=int, default=settings.max_new_tokens)
    p.add_argument("--batch-size", type=int, default=settings.batch_size)
    p.add_argument("--start-window", type=int, default=0,
                   help=f"a helper process: generate windows of {WINDOW} prompts from this one on into the shared "
                        f"checkpoint (a long run split over processes); the run without it assembles the log")
    args = p.parse_args(argv)
    out = sample_traffic(args.n, args.seed, resolve_path(args.out), args.model, args.max_new_tokens,
                         args.batch_size, first_window=args.start_window)
    from rich.console import Console
    if out is None:
        Console().print(f"windows from {args.start_window} on are checkpointed; run again without "
                        f"--start-window (same --out) to assemble the log once the earlier ones are done")
        return 0
    Console().print(f"[green]wrote[/] {args.n} calls to {out}")
    return 0
