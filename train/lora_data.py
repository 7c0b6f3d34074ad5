"""The training set for `python -m train lora`: read, validate, hash and split it.

Input is what `make export` (curate's export) writes: OpenAI chat JSONL, one
`{"messages": [...], "id": ..., "origin": "example"|"replay"}` per line, and `<name>.manifest.json` beside it
(ids, content hashes, origins). Bad input fails with the file, line and field.

Or the same set as a Hugging Face `datasets` folder (`curate export --format datasets`: `save_to_disk` of a
DatasetDict whose `sft` split holds those rows and whose `pairs` split holds the preference pairs, with the
manifest inside as `manifest.json`); a row is then named `folder[split]:row` (1-based) in errors. A folder holding
one plain Dataset is read as the `sft` split.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

ROLES = {"system", "user", "assistant"}
ORIGINS = {"example", "replay"}


class TrainingSetError(ValueError):
    pass


@dataclass(frozen=True)
class Example:
    id: str
    origin: str
    messages: list  # [{"role": ..., "content": ...}], at least one assistant turn
    content_hash: str


def canonical(messages: list) -> list:
    """Role + content of each message: what a hash covers and what the trainer sees (extra keys dropped)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def digest(value) -> str:
    """sha256 of canonical JSON (sorted keys), the form of every content hash in a training set's manifest."""
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def content_hash(messages: list) -> str:
    """sha256 of the conversation as canonical JSON (role + content only, so key order and extras don't matter)."""
    return digest(canonical(messages))


DATASET_MANIFEST = "manifest.json"  # inside a `datasets` folder
SFT_SPLIT, PAIRS_SPLIT = "sft", "pairs"  # the splits of a `datasets` folder


def manifest_path(path: Path) -> Path:
    """data/train/train.jsonl -> data/train/train.manifest.json; a `datasets` folder -> folder/manifest.json"""
    path = Path(path)
    if path.is_dir():
        return path / DATASET_MANIFEST
    return path.with_name(path.name.removesuffix(".jsonl") + ".manifest.json")


def read_training_set(path: str | Path) -> list[Example]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training set {path} does not exist (write it with `make export`)")
    examples = read_lines(path, _parse_row) if path.is_dir() else read_lines(path, _parse_line)
    if not examples:
        raise TrainingSetError(f"{path}: the training set is empty")
    return _apply_manifest(examples, manifest_path(path))


def read_lines(path: Path, parse, split: str = SFT_SPLIT) -> list:
    """Each non-blank line of a JSONL file through `parse(line, "file:line")`, or each row of a `datasets` folder's
    `split` through `parse(row, "folder[split]:row")`; ids must be unique in the file."""
    items, seen = [], set()
    rows = dataset_rows(path, split) if path.is_dir() else _file_lines(path)
    for where, line in rows:
        item = parse(line, where)
        if item.id in seen:
            raise TrainingSetError(f"{where}: field 'id': duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    return items


def _file_lines(path: Path):
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield f"{path}:{lineno}", line


def dataset_rows(folder: Path, split: str):
    """(where, row dict) of one split of a `datasets.save_to_disk` folder; nothing when it has no such split."""
    from datasets import Dataset, load_from_disk
    try:
        data = load_from_disk(str(folder))
    except FileNotFoundError as e:
        raise TrainingSetError(f"{folder}: not a `datasets` folder (datasets.load_from_disk: {e})") from None
    if isinstance(data, Dataset):  # one plain dataset: the SFT rows
        data = {SFT_SPLIT: data}
    if split not in data:
        return
    for i, row in enumerate(data[split], 1):
        yield f"{folder}[{split}]:{i}", row


def json_object(line: str, where: str) -> dict:
    """One JSONL line as an object, or a TrainingSetError naming file:line (training sets and pair sets)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise TrainingSetError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise TrainingSetError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row


def _parse_line(line: str, where: str) -> Example:
    return _parse_row(json_object(line, where), where)


def _parse_row(row: dict, where: str) -> Example:
    msgs = messages(row, "messages", where)
    if not any(m["role"] == "assistant" for m in msgs):
        raise TrainingSetError(f"{where}: field 'messages': no assistant turn to learn from")
    ex_id = item_id(row, where)
    origin = row.get("origin")
    origin = "example" if origin is None else origin  # a `datasets` row has every column: None where a line has none
    if origin not in ORIGINS:
        raise TrainingSetError(f"{where}: field 'origin': {origin!r} is not one of {sorted(ORIGINS)}")
    return Example(ex_id, origin, msgs, content_hash(msgs))


def item_id(row: dict, where: str) -> str:
    """The row's `id` (a training example's or a preference pair's) as a string."""
    value = row.get("id")
    if not isinstance(value, (str, int)) or value == "":
        raise TrainingSetError(f"{where}: field 'id': missing or not a string")
    return str(value)


def messages(row: dict, key: str, where: str, roles: set = ROLES) -> list:
    """row[key] checked as a non-empty list of chat messages with these roles, in canonical form."""
    msgs = row.get(key)
    if not isinstance(msgs, list) or not msgs:
        raise TrainingSetError(f"{where}: field '{key}': missing or not a non-empty list of messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in roles:
            raise TrainingSetError(f"{where}: field '{key}[{i}].role': expected one of {sorted(roles)}")
        if not isinstance(m.get("content"), str):
            raise TrainingSetError(f"{where}: field '{key}[{i}].content': expected a string")
    return canonical(msgs)


def _apply_manifest(examples: list[Example], path: Path) -> list[Example]:
    """The manifest `curate export` writes ({"items": [{id, origin, content_hash}]}) must name exactly the JSONL's
    ids, and each content hash must be the one recomputed from the JSONL (an edited line is caught here)."""
    if not path.is_file():
        return examples
    try:
        items = {str(x["id"]): x["content_hash"] for x in json.loads(path.read_text())["items"]}
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise TrainingSetError(f"{path}: not a training-set manifest (missing {e})") from None
    ids = {ex.id for ex in examples}
    if set(items) != ids:
        extra, missing = sorted(set(items) - ids)[:3], sorted(ids - set(items))[:3]
        raise TrainingSetError(f"{path}: field 'items' does not match the JSONL beside it "
                               f"(only in manifest: {extra}, only in JSONL: {missing})")
    changed = [ex.id for ex in examples if items[ex.id] != ex.content_hash]
    if changed:
        raise TrainingSetError(f"{path}: content_hash of {changed[:3]} differs from the JSONL's content "
                               f"({len(changed)} item(s) changed since the export); export again")
    return examples


def set_hash(examples: list[Example]) -> str:
    """Identity of a training set: its (id, content hash) pairs, order-free."""
    pairs = sorted(f"{ex.id}\t{ex.content_hash}" for ex in examples)
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


def split(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Deterministic validation split: order by a seeded hash of the id, the first share is validation.

    No validation set when it would hold fewer than one example or leave fewer than two for training.
    """
    n_val = round(len(examples) * val_fraction)
    if val_fraction <= 0 or n_val < 1 or len(examples) - n_val < 2:
        return list(examples), []
    keyed = sorted(examples, key=lambda ex: hashlib.sha256(f"{seed}:{ex.id}".encode()).hexdigest())
    val_ids = {ex.id for ex in keyed[:n_val]}
    return [ex for ex in examples if ex.id not in val_ids], [ex for ex in examples if ex.id in val_ids]


def write_manifest(path: Path, examples: list[Example], train: list[Example], val: list[Example]) -> None:
    """The exact examples a run saw, for the adapter folder."""
    val_ids = {ex.id for ex in val}
    data = {"training_set_hash": set_hash(examples), "n_train": len(train), "n_val": len(val),
            "examples": [{"id": ex.id, "origin": ex.origin, "content_hash": ex.content_hash,
                          "split": "val" if ex.id in val_ids else "train"} for ex in examples]}
    path.write_text(json.dumps(data, indent=1) + "\n")
