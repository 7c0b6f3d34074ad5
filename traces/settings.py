"""Settings: one frozen dataclass per stage, resolved from (lowest to highest precedence)
the dataclass defaults, `[tool.mend.<stage>]` in the project's pyproject.toml, environment
variables `MEND_<STAGE>_<KEY>`, then command-line flags. Unknown keys are an error.

Secrets never live here: a setting such as `api_key_env = "OPENAI_API_KEY"` names the
environment variable that holds the key, and only the client reads it.

    python -m traces config      # prints every stage's resolved settings and their sources
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# stage name -> "module:Class" of its settings dataclass (imported lazily, heavy imports stay out)
STAGES = {
    "traces": "traces.settings:TracesSettings",
    "train": "train.settings:TrainSettings",
    "evals": "evals.settings:EvalsSettings",
    "curate": "curate.settings:CurateSettings",
}


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class TracesSettings:
    inbox: str = "data/inbox"  # folder `traces ingest` (and the nightly) reads when given no paths; beside the database
    holdout_fraction: float = 0.2  # share of split groups kept out of synthesis, for the gate: a fifth of the sample
    # traffic's 1,000 calls leaves the gate ~200 holdout traces (docs/results.md)
    group_key: str = "base_id"  # metadata field that groups prompts into one split unit (so variants of one request
    # never straddle the split); falls back to the prompt
    scrub_secrets: bool = True  # replace API-key / bearer-token look-alikes before storage: secrets never reach the DB
    redact_pii: bool = False  # also replace e-mail addresses and phone numbers (opt-in; `--redact-pii` for one ingest)
    batch_lines: int = 200_000  # raw lines validated and inserted per transaction; the database is released between
    # batches, so another command waits one batch, not one file
    s3_endpoint: str = ""  # an S3-compatible server for s3:// input (MinIO, R2: "http://host:9000"); empty: AWS, or
    # AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL as the AWS SDKs read them. Credentials: the AWS SDK's chain, never here
    http_timeout_s: float = 60.0  # http(s):// input: how long to wait for an answer or for the next bytes; 0: no limit
    busy_timeout_s: float = 10.0  # how long to retry a database held by another process (an ingest frees it per batch)


def project_root() -> Path:
    """MEND_HOME if set, else the nearest folder above the cwd whose pyproject.toml has [tool.mend]."""
    if os.environ.get("MEND_HOME"):
        return Path(os.environ["MEND_HOME"]).resolve()
    here = Path.cwd().resolve()
    for folder in [here, *here.parents]:
        pp = folder / "pyproject.toml"
        if pp.is_file() and "[tool.mend" in pp.read_text(errors="ignore"):
            return folder
    return here


def resolve_path(p: str | os.PathLike) -> Path:
    """Relative paths resolve against the project root, not the current directory."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else project_root() / p


def db_path() -> Path:
    return resolve_path(os.environ.get("MEND_DB", "data/mend.duckdb"))


def _pyproject_table(stage: str) -> dict:
    """[tool.mend.<stage>]; a file that does not parse and a table no stage reads (a typo) are errors."""
    pp = project_root() / "pyproject.toml"
    if not pp.is_file():
        return {}
    try:
        data = tomllib.loads(pp.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise SettingsError(f"cannot read {pp}: {e}") from None
    mend = data.get("tool", {}).get("mend", {})
    for name, table in mend.items():
        if name not in STAGES or not isinstance(table, dict):
            raise SettingsError(f"unknown settings table [tool.mend.{name}] in {pp} (known: "
                                f"{', '.join(f'[tool.mend.{s}]' for s in STAGES)})")
    return mend.get(stage, {})


def _coerce(value: Any, default: Any, key: str, origin: str) -> Any:
    """Environment values arrive as strings: parse them to the default's type."""
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, (list, tuple, dict)) or default is None:
            if value[:1] in "[{":
                return json.loads(value)
            if isinstance(default, (list, tuple)):  # a plain string would be iterated letter by letter
                return type(default)(item.strip() for item in value.split(",") if item.strip())
            return value
    except ValueError:
        raise SettingsError(f"{origin}: {key}={value!r} is not a valid {type(default).__name__}") from None
    return value


def _checked(value: Any, default: Any, signed: bool, where: str) -> Any:
    """A number setting must be a finite number, and not negative unless its class lists it in SIGNED (where a
    negative value means something, e.g. max_steps = -1): NaN or a negative budget would silently disable or
    break what it bounds."""
    if not isinstance(default, (int, float)) or isinstance(default, bool):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingsError(f"{where} must be a finite number, got {value!r}")
    if value < 0 and not signed:
        raise SettingsError(f"{where} must not be negative, got {value!r}")
    return value


def settings_class(stage: str) -> type:
    if stage not in STAGES:
        raise SettingsError(f"unknown stage {stage!r} (known: {', '.join(STAGES)})")
    module, name = STAGES[stage].split(":")
    return getattr(importlib.import_module(module), name)


def load_with_sources(stage: str, flags: dict | None = None) -> tuple[Any, dict[str, str]]:
    """Resolve a stage's settings; returns (settings, {key: where the value came from})."""
    cls = settings_class(stage)
    known = {f.name: f for f in fields(cls)}
    defaults = {k: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for k, f in known.items()}
    values, sources = dict(defaults), {k: "default" for k in known}
    layers = [
        ("pyproject.toml [tool.mend.%s]" % stage, _pyproject_table(stage)),
        ("environment", _env_layer(stage)),
        ("flag", {k: v for k, v in (flags or {}).items() if v is not None}),
    ]
    for origin, layer in layers:
        for key, value in layer.items():
            env_key = origin == "environment" and f"MEND_{stage.upper()}_{key.upper()}"
            if key not in known:
                raise SettingsError(f"unknown setting {env_key or key!r} in {origin} "
                                    f"(known for {stage}: {', '.join(known)})")
            value = _coerce(value, defaults[key], key, env_key or origin)
            values[key] = _checked(value, defaults[key], key in getattr(cls, "SIGNED", ()),
                                   f"{env_key or origin}: {key}")
            sources[key] = f"env {env_key}" if env_key else origin
    return cls(**values), sources


def _env_layer(stage: str) -> dict:
    prefix = f"MEND_{stage.upper()}_"
    return {k[len(prefix):].lower(): v for k, v in os.environ.items() if k.startswith(prefix)}


def load(stage: str, flags: dict | None = None) -> Any:
    return load_with_sources(stage, flags)[0]


def as_dict(settings: Any) -> dict:
    """For storing the resolved settings with each run (they hold no secrets, only env var names)."""
    return dataclasses.asdict(settings)
