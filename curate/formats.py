"""The exported training set in other formats: `python -m curate export --format datasets|openai [--push-to-hub REPO]`.

- `datasets`: a Hugging Face `datasets` folder (`DatasetDict.save_to_disk`) with two splits, `sft` (the training set's
  rows: `id`, `origin`, `source`, `messages`) and `pairs` (the preference pairs with their lineage, as pairs.jsonl),
  plus the export manifest as `manifest.json`. `datasets.load_from_disk(folder)` opens it, and
  `python -m train lora --training-set FOLDER` trains on it as on the JSONL (same ids, content hashes, set hash).
  `--push-to-hub REPO` then uploads it as a dataset repo with two configs, `sft` (the default) and `pairs`, each a
  `train` split (private unless `--public`; needs HF_TOKEN).
- `openai`: OpenAI fine-tuning JSONL. Each line of `<name>.openai.jsonl` is `{"messages": [...]}` plus `"tools"` when
  the seed request offered tools, nothing else: the supervised format. Each line of `<name>.openai.pairs.jsonl` is
  the preference (DPO) format, `{"input": {"messages": [...], "tools"?: [...]}, "preferred_output": [assistant],
  "non_preferred_output": [assistant]}`. The conversations are the stored requests in OpenAI's shape, tool calls
  and tool results included (the mend trainer keeps their text turns only), with the training set's answer last;
  a request whose tool turns do not form a valid sequence (a tool result without its call) is written as the
  training set has it (text turns only) and counted.
Lines are in the training set's order (the manifest's `items`, the pairs' `pairs.items`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from traces import store

ROLES = ("system", "user", "assistant", "tool")  # the roles of OpenAI's fine-tuning messages ("developer" is system)
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # a function name the API accepts


# ---------- datasets ----------

def _features():
    from datasets import Features, List, Value
    text = Value("string")
    msgs = List({"role": text, "content": text})
    sft = Features({"id": text, "origin": text, "source": text, "messages": msgs})
    pairs = Features({"id": text, "prompt": msgs, "chosen": msgs, "rejected": msgs, "example_id": text,
                      "cluster_id": text, "rejected_source": text, "rejected_id": text})
    return sft, pairs


def write_dataset(rows: list[dict], prefs: list[dict], manifest: dict, folder: Path) -> dict:
    """rows (the training set's JSONL lines) and prefs (pairs.jsonl's) as a DatasetDict folder with the manifest
    inside; written beside `folder` and renamed into place, so a reader never sees half of it."""
    from datasets import Dataset, DatasetDict, disable_progress_bars

    from train.lora_data import DATASET_MANIFEST, PAIRS_SPLIT, SFT_SPLIT
    disable_progress_bars()
    sft_f, pair_f = _features()
    columns = lambda items, features: {k: [r.get(k) for r in items] for k in features}  # noqa: E731
    data = DatasetDict({SFT_SPLIT: Dataset.from_dict(columns(rows, sft_f), features=sft_f),
                        PAIRS_SPLIT: Dataset.from_dict(columns(prefs, pair_f), features=pair_f)})
    manifest = manifest | {"path": folder.name, "format": "datasets",
                           "pairs": manifest["pairs"] | {"path": f"{folder.name}[{PAIRS_SPLIT}]"}}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        data.save_to_disk(str(tmp / "data"))
        (tmp / "data" / DATASET_MANIFEST).write_text(json.dumps(manifest, indent=1))
        _replace_dir(tmp / "data", folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _replace_dir(new: Path, folder: Path) -> None:
    if folder.exists() and not (folder / "dataset_dict.json").is_file():
        raise FileExistsError(f"{folder} exists and is not a `datasets` folder: choose another --out")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        os.rename(folder, old)
    os.rename(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def push_dataset(folder: Path, repo_id: str, token: str, private: bool = True) -> list[str]:
    """Upload the folder's splits as the dataset repo's configs `sft` (default) and `pairs`, split `train` each
    (an empty pairs split is not pushed). Returns the configs pushed."""
    from datasets import load_from_disk

    from train.lora_data import PAIRS_SPLIT, SFT_SPLIT
    data = load_from_disk(str(folder))
    pushed = []
    for name, default in ((SFT_SPLIT, True), (PAIRS_SPLIT, False)):
        if name in data and len(data[name]):
            data[name].push_to_hub(repo_id, config_name=name, set_default=default, split="train", token=token,
                                   private=private, commit_message=f"mend: {name} ({len(data[name])} rows)")
            pushed.append(name)
    return pushed


# ---------- OpenAI fine-tuning JSONL ----------

def openai_path(train_out: Path) -> Path:
    """data/train/train.jsonl -> data/train/train.openai.jsonl"""
    return train_out.with_name(train_out.name.removesuffix(".jsonl") + ".openai.jsonl")


def write_openai(items: list[dict], prefs: list[dict], out: Path) -> dict:
    """The supervised lines to `out`, the preference lines beside it (train.dpo.pairs_path); both atomically."""
    from train.dpo import pairs_path
    lines, pair_lines, fallback = openai_lines(items, prefs)
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic(out, _jsonl(lines))
    _atomic(pairs_path(out), _jsonl(pair_lines))
    return {"out": str(out), "pairs_out": str(pairs_path(out)), "lines": len(lines), "pairs": len(pair_lines),
            "with_tools": sum("tools" in x for x in lines), "text_only": fallback}


def openai_lines(items: list[dict], prefs: list[dict]) -> tuple[list[dict], list[dict], int]:
    """(supervised lines, preference lines, how many lines fell back to the training set's text turns)."""
    examples, traces = _requests(items, prefs)
    lines, pair_lines, fallback = [], [], 0
    for it in items:
        if it["origin"] == "example":
            raw, tools = examples.get(it["id"], (None, None))
            answer = {"role": "assistant", "content": it["messages"][-1]["content"]}
        elif it["origin"] == "self":  # the base answered the instruction-free request itself: no tool turns
            raw, tools = None, traces.get(it.get("trace_id"), (None, None, None))[1]
            answer = None
        else:
            raw, tools, calls = traces.get(it["id"], (None, None, None))
            answer = openai_message({"role": "assistant", "content": it["messages"][-1]["content"],
                                     "tool_calls": calls})
        msgs = _conversation(raw, answer, final="assistant")
        if msgs is None:
            fallback += raw is not None
            msgs = [dict(m) for m in it["messages"]]
        lines.append({"messages": msgs} | ({"tools": tools} if tools else {}))
    for p in prefs:
        raw, tools = examples.get(p["example_id"], (None, None))
        msgs = _conversation(raw, None, final="user")
        if msgs is None:
            fallback += raw is not None
            msgs = [dict(m) for m in p["prompt"]]
        pair_lines.append({"input": {"messages": msgs} | ({"tools": tools} if tools else {}),
                           "preferred_output": [dict(m) for m in p["chosen"]],
                           "non_preferred_output": [dict(m) for m in p["rejected"]]})
    return lines, pair_lines, fallback


def _requests(items: list[dict], prefs: list[dict]) -> tuple[dict, dict]:
    """example id -> (stored request messages, OpenAI tools of its seed trace); trace id -> (messages, tools,
    logged tool calls)."""
    ex_ids = sorted({it["id"] for it in items if it["origin"] == "example"} | {p["example_id"] for p in prefs})
    tr_ids = sorted({it["id"] for it in items if it["origin"] == "replay"}
                    | {it["trace_id"] for it in items if it["origin"] == "self" and it.get("trace_id")})
    with store.connect(read_only=True) as con:
        ex = con.execute("""SELECT e.example_id, e.messages, t.tools FROM examples e
                            LEFT JOIN traces t ON t.trace_id = e.seed_trace_id
                            WHERE e.example_id IN (SELECT unnest(?::VARCHAR[]))""", [ex_ids]).fetchall()
        tr = con.execute("""SELECT trace_id, messages, tools, tool_calls FROM traces
                            WHERE trace_id IN (SELECT unnest(?::VARCHAR[]))""", [tr_ids]).fetchall()
    load = lambda v: json.loads(v) if v else None  # noqa: E731
    return ({r[0]: (load(r[1]), openai_tools(load(r[2]))) for r in ex},
            {r[0]: (load(r[1]), openai_tools(load(r[2])), load(r[3])) for r in tr})


def _conversation(raw: list | None, answer: dict | None, final: str) -> list | None:
    """The stored request in OpenAI's shape (+ the answer): None when there is none or it is not a valid sequence."""
    if not isinstance(raw, list):
        return None
    msgs = [m for m in map(openai_message, raw) if m is not None]
    while msgs and msgs[-1]["role"] == "assistant" and final == "user":
        msgs.pop()  # a pair's prompt ends where the answers start
    msgs += [answer] if answer else []
    return msgs if sequence_error(msgs, final) is None else None


def _text(content) -> str | None:
    """A message's text: a string as is; a list of content parts -> its text parts joined by newlines."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "\n".join(parts)
    return json.dumps(content, ensure_ascii=False)


def openai_message(m) -> dict | None:
    """One stored message as a fine-tuning message (role, content, and tool_calls / tool_call_id / name where the
    format has them); None for what the format has no place for (another role, not an object)."""
    if not isinstance(m, dict):
        return None
    role = "system" if m.get("role") == "developer" else m.get("role")
    if role not in ROLES:
        return None
    out, content = {"role": role}, _text(m.get("content"))
    if role == "assistant":
        calls = [c for c in map(_tool_call, m.get("tool_calls") or []) if c] if isinstance(m.get("tool_calls"), list) \
            else []
        out["content"] = (content or None) if calls else (content or "")
        if calls:
            out["tool_calls"] = calls
    else:
        out["content"] = content or ""
    if role == "tool":
        out["tool_call_id"] = m.get("tool_call_id") if isinstance(m.get("tool_call_id"), str) else ""
    elif isinstance(m.get("name"), str) and m["name"]:
        out["name"] = m["name"]
    return out


def _tool_call(c) -> dict | None:
    fn = c.get("function") if isinstance(c, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(c.get("id"), str):
        return None
    args = fn.get("arguments")
    args = args if isinstance(args, str) else json.dumps({} if args is None else args, ensure_ascii=False)
    return {"id": c["id"], "type": "function", "function": {"name": fn["name"], "arguments": args}}


def openai_tools(raw) -> list:
    """A request's tools as the format's function tools (`{"type": "function", "function": {name, description?,
    parameters?, strict?}}`; a bare function object is wrapped); other kinds of tool (built-in ones such as
    web_search) and names the API refuses are left out."""
    out = []
    for t in raw if isinstance(raw, list) else []:
        if not isinstance(t, dict):
            continue
        fn = t.get("function") if t.get("type", "function") == "function" and "function" in t else \
            (t if "type" not in t else None)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not TOOL_NAME.fullmatch(fn["name"]):
            continue
        keep = {"name": fn["name"]}
        for key, kind in (("description", str), ("parameters", dict), ("strict", bool)):
            if isinstance(fn.get(key), kind):
                keep[key] = fn[key]
        out.append({"type": "function", "function": keep})
    return out


def sequence_error(msgs: list[dict], final: str = "assistant") -> str | None:
    """Why the fine-tuning API would refuse this conversation, or None: roles, the last turn (`final`: assistant
    for a supervised line, user or tool for a preference prompt), tool results that answer the calls of the
    assistant turn right before them, at least one assistant turn in a supervised line."""
    if not msgs:
        return "no messages"
    open_calls: set | None = None
    for i, m in enumerate(msgs):
        if m["role"] not in ROLES:
            return f"messages[{i}]: role {m['role']!r}"
        if m["role"] == "tool":
            if open_calls is None or m.get("tool_call_id") not in open_calls:
                return f"messages[{i}]: a tool result without its call"
            open_calls.discard(m["tool_call_id"])
            continue
        if m["role"] == "assistant" and not (m.get("content") or m.get("tool_calls")):
            if m.get("content") is None:
                return f"messages[{i}]: an assistant turn with neither content nor tool calls"
        open_calls = {c["id"] for c in m.get("tool_calls") or []} if m["role"] == "assistant" else None
    last = msgs[-1]["role"]
    if final == "assistant" and last != "assistant":
        return f"the last turn is {last}, not the answer"
    if final == "user" and last not in ("user", "tool"):
        return f"the prompt ends with {last}"
    return None


def _jsonl(rows) -> bytes:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    return ("\n".join(lines) + "\n" if lines else "").encode()


def _atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
