"""python -m bench [--only NAME] [--quick] — see bench/__init__.py for the module interface."""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import sys
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

COLUMNS = ["benchmark", "metric", "mend", "baseline", "ratio", "target", "notes", "date", "machine"]
HEADER = """# Benchmarks

Written by `make bench` (`python -m bench`); each row is replaced when its benchmark runs again
(`python -m bench --only NAME`), rows of benchmarks not run are kept. Figures are measured, not
estimated; `--quick` runs are marked as such in the notes.
"""


def discover() -> list[str]:
    folder = Path(__file__).parent
    return sorted(p.stem[len("bench_"):] for p in folder.glob("bench_*.py"))


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = _gpu_name()
    return f"{platform.machine()} {cores} cores" + (f", {gpu}" if gpu else "")


def _gpu_name() -> str:
    # only ask torch if it is already imported by a benchmark: importing it here costs seconds
    torch = sys.modules.get("torch")
    try:
        return torch.cuda.get_device_name(0) if torch and torch.cuda.is_available() else ""
    except Exception:
        return ""


def fmt(value) -> str:
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def run_one(name: str, quick: bool, console: Console) -> list[dict]:
    module = importlib.import_module(f"bench.bench_{name}")
    console.print(f"[bold]running[/] bench_{name}{' (quick)' if quick else ''} ...")
    rows = module.run(quick)
    stamp = {"date": dt.date.today().isoformat(), "machine": machine()}
    out = []
    for row in rows:
        missing = [k for k in COLUMNS[:7] if k not in row]
        if missing:
            raise ValueError(f"bench_{name}: row lacks {missing}")
        notes = str(row["notes"]) + (" (quick run)" if quick else "")
        out.append({**{k: fmt(row[k]) for k in COLUMNS[:6]}, "notes": fmt(notes), **stamp, "_module": name})
    return out


def read_existing(path: Path) -> list[dict]:
    """Rows of the current docs/benchmarks.md table (module name kept in a trailing HTML comment)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if not line.startswith("| ") or line.startswith("| benchmark ") or "<!-- module:" not in line:
            continue
        body, _, tail = line.partition("<!-- module:")
        cells = [c.strip() for c in body.strip().strip("|").split(" | ")]
        if len(cells) == len(COLUMNS):
            rows.append({**dict(zip(COLUMNS, cells)), "_module": tail.split("-->")[0].strip()})
    return rows


def write(path: Path, rows: list[dict]) -> None:
    lines = [HEADER, "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(r[c] or " " for c in COLUMNS) + f" | <!-- module: {r['_module']} -->")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def record_rows(module: str, rows: list[dict], out: Path | None = None) -> None:
    """Write rows measured outside `python -m bench` (a long job run on its own) into docs/benchmarks.md, replacing
    only the module's rows with the same benchmark and metric: its other rows stay."""
    out = out or Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
    stamp = {"date": dt.date.today().isoformat(), "machine": machine(), "_module": module}
    new = [{**{k: fmt(r[k]) for k in COLUMNS[:7]}, **stamp} for r in rows]
    names = {(r["benchmark"], r["metric"]) for r in new}
    kept = [r for r in read_existing(out) if not (r["_module"] == module and (r["benchmark"], r["metric"]) in names)]
    write(out, sorted(kept + new, key=lambda r: r["_module"]))


def emit(module: str, rows: list[dict], record: bool) -> None:
    """A bench module run on its own (`python -m bench.bench_X ... [--record]`): its rows printed, and recorded."""
    import json
    print(json.dumps(rows, indent=1))
    if record:
        record_rows(module, rows)


def show(console: Console, rows: list[dict]) -> None:
    table = Table(title="benchmarks")
    for c in COLUMNS[:7]:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(r[c] for c in COLUMNS[:7]))
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--only", action="append", help="run only this benchmark (repeatable)")
    ap.add_argument("--quick", action="store_true", help="small inputs, to check the benchmarks run")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"))
    args = ap.parse_args(argv)
    console = Console()
    names = discover()
    unknown = [n for n in args.only or [] if n not in names]
    if unknown:
        console.print(f"[red]error:[/] unknown benchmark {unknown} (known: {', '.join(names)})")
        return 2
    chosen = args.only or names
    new_rows, failed = [], []
    for name in chosen:
        try:
            new_rows += run_one(name, args.quick, console)
        except Exception:
            console.print(f"[red]bench_{name} failed[/]\n{traceback.format_exc()}")
            failed.append(name)
    done = {r["_module"] for r in new_rows}
    kept = [r for r in read_existing(Path(args.out)) if r["_module"] not in done]
    rows = sorted(kept + new_rows, key=lambda r: r["_module"])
    write(Path(args.out), rows)
    show(console, new_rows)
    console.print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
