"""python -m evals registry promote|rollback|list — which model (base + adapter) is production.

    python -m evals registry list [--json]
    python -m evals registry promote --decision DECISION_ID          # rests on a PROMOTE gate decision
    python -m evals registry promote --model REF --adapter PATH --force   # no passing gate: recorded as forced
    python -m evals registry rollback                                 # back to the entry before the current one

The `registry` table keeps every promotion and rollback; exactly one row has `is_current`. Each change is
one transaction, so a crash never leaves zero or two current rows. `resolve_ref("production")` is what every
stage calls to turn the `production` model ref into (model_ref, adapter_path).
"""
from __future__ import annotations

import argparse
import uuid

from rich.console import Console
from rich.table import Table

from traces import json_out, store
from traces.hashing import adapter_hash
from traces.terminal import safe

PRODUCTION = "production"


class RegistryError(RuntimeError):
    pass


def base_model_ref() -> str:
    from traces.settings import load
    return load("train").model


def current(con) -> dict | None:
    row = con.execute("""SELECT entry_id, model_ref, adapter_path, adapter_hash, decision_id, action, forced,
                                created_at FROM registry WHERE is_current""").fetchone()
    keys = ["entry_id", "model_ref", "adapter_path", "adapter_hash", "decision_id", "action", "forced", "created_at"]
    return dict(zip(keys, row)) if row else None


def resolve_ref(ref: str, adapter: str | None = None) -> tuple[str, str | None]:
    """'production' -> the current entry's (model_ref, adapter_path); the base model when the registry is empty.
    Any other ref passes through unchanged with the given adapter."""
    if ref != PRODUCTION:
        return ref, adapter
    with store.connect(read_only=True) as con:
        entry = current(con)
    if entry is None:
        return base_model_ref(), None
    return entry["model_ref"], entry["adapter_path"]


def _insert_current(con, model_ref, adapter_path, adapter_h, decision_id, action, forced) -> str:
    """Clear the current flag and insert the new current entry in one transaction."""
    entry_id = f"reg-{uuid.uuid4().hex[:12]}"
    with store.transaction(con):
        con.execute("UPDATE registry SET is_current = false WHERE is_current")
        con.execute("""INSERT INTO registry (entry_id, model_ref, adapter_path, adapter_hash, decision_id, action,
                       forced, is_current, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, true, now())""",
                    [entry_id, model_ref, adapter_path, adapter_h, decision_id, action, forced])
        n = con.execute("SELECT count(*) FROM registry WHERE is_current").fetchone()[0]
        if n != 1:  # cannot happen inside one transaction; checked because the invariant is the point
            raise RegistryError(f"registry would have {n} current entries")
    return entry_id


def promote(model_ref: str | None = None, adapter_path: str | None = None, decision_id: str | None = None,
            force: bool = False) -> str:
    """Make (model_ref, adapter) production. Needs a PROMOTE gate decision for exactly that candidate,
    unless force=True (then recorded as forced). Returns the new entry id."""
    with store.connect() as con:
        decision = _decision(con, decision_id) if decision_id else None
        if decision:
            model_ref = model_ref or decision["candidate_ref"]
            adapter_path = adapter_path if adapter_path is not None else decision["candidate_adapter"]
        if not model_ref:
            raise RegistryError("promote needs --decision or --model")
        a_hash = adapter_hash(adapter_path)
        passing = bool(decision and decision["verdict"] == "PROMOTE"
                       and decision["candidate_ref"] == model_ref
                       and (decision["candidate_adapter_hash"] or None) == a_hash)
        if not passing and not force:
            why = ("no gate decision given" if not decision else
                   f"gate decision {decision_id} says {decision['verdict']}" if decision["verdict"] != "PROMOTE"
                   else f"gate decision {decision_id} was for another candidate")
            raise RegistryError(f"refusing to promote {model_ref} + {adapter_path or 'no adapter'}: {why}. "
                                "Run `python -m evals gate`, or pass --force (recorded as forced).")
        return _insert_current(con, model_ref, adapter_path, a_hash, decision_id, "promote", not passing)


def rollback() -> str:
    """Undo the current promotion: production becomes what it was before it (recorded as a new row).
    The history is a stack: a promote pushes, a rollback pops, so two rollbacks undo two promotions."""
    with store.connect() as con:
        if current(con) is None:
            raise RegistryError("registry is empty: production is already the base model")
        stack = []
        for row in con.execute("""SELECT action, model_ref, adapter_path, adapter_hash, decision_id FROM registry
                                  ORDER BY created_at, entry_id""").fetchall():
            if row[0] == "promote":
                stack.append(row[1:])
            elif stack:
                stack.pop()
        if not stack:
            raise RegistryError("nothing to roll back: production is already the base model")
        stack.pop()
        model_ref, adapter_path, a_hash, decision_id = stack[-1] if stack else (base_model_ref(), None, None, None)
        return _insert_current(con, model_ref, adapter_path, a_hash, decision_id, "rollback", False)


def _decision(con, decision_id: str) -> dict:
    row = con.execute("""SELECT decision_id, candidate_ref, candidate_adapter, candidate_adapter_hash, verdict
                         FROM gate_decisions WHERE decision_id = ?""", [decision_id]).fetchone()
    if row is None:
        raise RegistryError(f"no gate decision {decision_id!r}")
    return dict(zip(["decision_id", "candidate_ref", "candidate_adapter", "candidate_adapter_hash", "verdict"], row))


HISTORY = ("entry_id", "created_at", "action", "model_ref", "adapter_path", "decision_id", "forced", "current")


def history() -> list[tuple]:
    """Every entry, oldest first, as HISTORY's fields (no adapter: None, the base model alone)."""
    with store.connect(read_only=True) as con:
        return con.execute("""SELECT entry_id, created_at, action, model_ref, adapter_path, decision_id, forced,
                                     is_current FROM registry ORDER BY created_at, entry_id""").fetchall()


def document() -> dict:
    """What `list --json` prints: production now, and the history behind it."""
    model_ref, adapter = resolve_ref(PRODUCTION)
    return {"production": {"model_ref": model_ref, "adapter_path": adapter},
            "history": json_out.records(HISTORY, history())}


def _print_list(console: Console) -> None:
    table = Table(title="registry (production history)")
    for col in ["entry", "when", "action", "model", "adapter", "gate decision", "forced", "current"]:
        table.add_column(col)
    for entry, when, action, model, adapter, decision, forced, is_current in history():
        cells = [entry, str(when), action, model, adapter or "(base)", decision or ""]
        table.add_row(*map(safe, cells), "forced" if forced else "", "*" if is_current else "")  # refs: user text
    console.print(table)
    model_ref, adapter = resolve_ref(PRODUCTION)
    console.print(f"production = {model_ref} + {adapter or 'no adapter'}", markup=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evals registry", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    json_out.add_json_flag(sub.add_parser("list", help="show the production history"))
    p = sub.add_parser("promote", help="make a candidate production")
    p.add_argument("--decision", help="gate decision id it rests on")
    p.add_argument("--model", help="model ref (default: the decision's candidate)")
    p.add_argument("--adapter", help="adapter folder (default: the decision's candidate adapter)")
    p.add_argument("--force", action="store_true", help="promote without a passing gate (recorded as forced)")
    sub.add_parser("rollback", help="make the previous entry production again")
    args = ap.parse_args(argv)
    if args.cmd == "list" and args.json:
        json_out.emit(document())
        return 0
    console = Console()
    try:
        if args.cmd == "promote":
            entry = promote(args.model, args.adapter, args.decision, args.force)
            console.print(f"promoted: entry {entry}", markup=False)
        elif args.cmd == "rollback":
            console.print(f"rolled back: entry {rollback()}", markup=False)
        _print_list(console)
    except RegistryError as e:
        Console(stderr=True).print(f"error: {e}", markup=False)
        return 2
    return 0
