"""Eval suites: versioned YAML under evals/suites/ (or the project's `suites_dir`), loaded and validated.

    python -m evals run --suite instruction_following

A suite file:
    name: format                  # must match the file name
    version: "1"                  # bump when the checks or the selection change: runs of different
                                  # versions are never compared (SuiteVersionMismatch)
    description: ...
    higher_is_better: true
    requires: judge               # optional: skipped with a message when no judge endpoint is configured
    select:                       # which traces; all parts are ANDed
      split: seed                 # optional default (the --split flag overrides)
      metadata: {task: summary}   # metadata field equality
      where: "tools IS NOT NULL"  # a SQL condition on the traces table (trusted: suites are code)
    checks:                       # either a list ...
      - check: contains
        args: {text: "Sources:"}
    # ... or `checks: {from_metadata: instructions}`: the IFEval instruction ids + kwargs in each trace's
    # metadata, or `{from_metadata: checks}`: metadata["checks"] = [{"check": ..., "args": {...}}];
    # `also: [{check: fluent}]` beside from_metadata adds checks every trace gets after its own.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from traces.store import json_value

PACKAGE_DIR = Path(__file__).parent / "suites"
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SuiteError(ValueError):
    pass


class SuiteVersionMismatch(SuiteError):
    pass


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    description: str = ""
    higher_is_better: bool = True
    requires: str | None = None
    select: dict = field(default_factory=dict)
    checks: tuple = ()  # ({"check": name, "args": {...}}, ...) when explicit
    from_metadata: str | None = None  # "instructions" | "checks"
    path: str = ""
    sha256: str = ""  # of the file: an edit without a version bump is detectable

    def check_names(self) -> list[str]:
        return [c["check"] for c in self.checks]

    def checks_for(self, trace: dict) -> list[tuple[str, dict]]:
        """The (check id, args) pairs to run on this trace, in a stable order (check_idx)."""
        fixed = [(c["check"], c.get("args") or {}) for c in self.checks]
        if self.from_metadata == "instructions":
            from evals.checks import instruction_specs
            return instruction_specs(json_value(trace.get("metadata"))) + fixed
        if self.from_metadata == "checks":
            specs = (json_value(trace.get("metadata")) or {}).get("checks") or []
            return [(s["check"], s.get("args") or {}) for s in specs] + fixed
        return fixed


def suite_dirs() -> list[Path]:
    from traces import settings
    own = settings.resolve_path(settings.load("evals").suites_dir)
    return [d for d in (own, PACKAGE_DIR) if d.is_dir()]


def available() -> list[str]:
    return sorted({p.stem for d in suite_dirs() for p in d.glob("*.yaml")})


def load(name_or_path: str) -> Suite:
    """A suite by name (project suites_dir first, then the packaged ones) or by a path to a .yaml file."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        found = [d / f"{name_or_path}.yaml" for d in suite_dirs() if (d / f"{name_or_path}.yaml").is_file()]
        if not found:
            raise SuiteError(f"unknown suite {name_or_path!r}; available: {', '.join(available()) or 'none'}")
        path = found[0]
    return parse(path.read_text(), str(path))


def parse(text: str, path: str = "<suite>") -> Suite:
    import yaml
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SuiteError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a suite is a mapping with name, version, select, checks")
    return _build(data, path, hashlib.sha256(text.encode()).hexdigest())


def _need(data: dict, key: str, path: str):
    if key not in data or data[key] in (None, ""):
        raise SuiteError(f"{path}: missing required field {key!r}")
    return data[key]


def _build(data: dict, path: str, sha: str) -> Suite:
    unknown = set(data) - {"name", "version", "description", "higher_is_better", "requires", "select", "checks"}
    if unknown:
        raise SuiteError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
    name, version = str(_need(data, "name", path)), str(_need(data, "version", path))
    if Path(path).suffix in (".yaml", ".yml") and Path(path).stem != name:
        raise SuiteError(f"{path}: field 'name' is {name!r} but the file is named {Path(path).stem!r}")
    select = _select(data.get("select") or {}, path)
    checks, from_metadata = _checks(_need(data, "checks", path), path)
    requires = data.get("requires")
    if requires not in (None, "judge"):
        raise SuiteError(f"{path}: field 'requires' must be 'judge' (got {requires!r})")
    return Suite(name, version, str(data.get("description", "")), bool(data.get("higher_is_better", True)),
                 requires, select, checks, from_metadata, path, sha)


def _select(select: dict, path: str) -> dict:
    if not isinstance(select, dict) or set(select) - {"split", "metadata", "where"}:
        raise SuiteError(f"{path}: field 'select' takes split, metadata, where")
    if select.get("split") not in (None, "seed", "holdout", "all"):
        raise SuiteError(f"{path}: select.split must be seed, holdout or all")
    for key in select.get("metadata") or {}:
        if not _KEY.match(str(key)):
            raise SuiteError(f"{path}: select.metadata key {key!r} must be a plain identifier")
    return dict(select)


def _checks(checks, path: str) -> tuple[tuple, str | None]:
    from evals.checks import get, UnknownCheck
    if isinstance(checks, dict):
        source = checks.get("from_metadata")
        source = "instructions" if source is True else source
        if source not in ("instructions", "checks") or set(checks) - {"from_metadata", "also"}:
            raise SuiteError(f"{path}: checks must be a list, or {{from_metadata: instructions | checks}} "
                             "(with `also: [...]`: checks every trace gets after its own)")
        return (_checks(checks["also"], path)[0] if checks.get("also") else ()), source
    if not isinstance(checks, list) or not checks:
        raise SuiteError(f"{path}: checks must be a non-empty list")
    out = []
    for i, c in enumerate(checks):
        if not isinstance(c, dict) or "check" not in c or set(c) - {"check", "args"}:
            raise SuiteError(f"{path}: checks[{i}] must be {{check: NAME, args: {{...}}}}")
        try:
            get(c["check"])
        except UnknownCheck as e:
            raise SuiteError(f"{path}: checks[{i}]: {e}") from None
        out.append({"check": c["check"], "args": dict(c.get("args") or {})})
    return tuple(out), None


def selection_sql(suite: Suite, split: str | None = None, trace_ids=None, limit: int | None = None,
                  seq: tuple[int | None, int] | None = None, ordered: bool = True):
    """(SQL, params) selecting the suite's traces, ordered by trace_id (deterministic limits) unless not `ordered`.
    seq=(after, upto): only traces with after < seq <= upto (an incremental run; after None: from the first)."""
    where, params = ["1=1"], []
    if seq is not None:
        where.append("seq > ? AND seq <= ?")
        params += [-1 if seq[0] is None else seq[0], seq[1]]
    split = split or suite.select.get("split") or "all"
    if split != "all":
        where.append("split = ?")
        params.append(split)
    for key, value in (suite.select.get("metadata") or {}).items():
        where.append(f"json_extract_string(metadata, '$.{key}') = ?")
        params.append(str(value))
    if suite.select.get("where"):
        where.append(f"({suite.select['where']})")
    if trace_ids is not None:
        where.append("list_contains(?, trace_id)")
        params.append(list(trace_ids))
    sql = ("SELECT trace_id, split, prompt, messages, response, tool_calls, tools, params, metadata FROM traces "
           f"WHERE {' AND '.join(where)}" + (" ORDER BY trace_id" if ordered else ""))
    if limit:
        sql += f" LIMIT {int(limit)}"
    return sql, params


def require_same_version(a: dict, b: dict) -> None:
    """a, b: eval_runs rows (dicts with suite, suite_version, run_id). Raises if they may not be compared."""
    if a["suite"] != b["suite"]:
        raise SuiteError(f"runs {a['run_id']} and {b['run_id']} are of different suites ({a['suite']} vs {b['suite']})")
    if str(a["suite_version"]) != str(b["suite_version"]):
        raise SuiteVersionMismatch(
            f"suite {a['suite']!r}: run {a['run_id']} used version {a['suite_version']} but run {b['run_id']} used "
            f"version {b['suite_version']}; results of different suite versions are not comparable. "
            "Re-run both with the current suite.")
