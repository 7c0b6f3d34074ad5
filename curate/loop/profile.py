"""The settings a nightly runs under: the demo profile (configs/demo.toml, applied as MEND_<STAGE>_<KEY>
environment variables) and the snapshot a resumed nightly compares with (data/nightly/<id>.settings.json)."""
from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

from rich.console import Console

from traces.settings import as_dict, load, resolve_path, settings_class

console = Console()


def apply_profile(path: Path) -> dict[str, str]:
    """Set MEND_<STAGE>_<KEY> for each [stage] key of the TOML file (a user's own env var wins).
    Keys a stage does not (yet) have are reported and skipped, so the profile never breaks a run."""
    data = tomllib.loads(path.read_text())
    applied = {}
    for stage, table in data.items():
        known = set(settings_class(stage).__dataclass_fields__)
        for key, value in table.items():
            env = f"MEND_{stage.upper()}_{key.upper()}"
            if key not in known:
                console.print(f"[yellow]demo profile: {stage}.{key} is not a setting here; skipped[/]")
                continue
            if env not in os.environ:
                os.environ[env] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
                applied[env] = os.environ[env]
    return applied


def settings_changed(nightly_id: str) -> list[str]:
    """Settings (stage.key) that differ from those the nightly started under, kept in
    data/nightly/<id>.settings.json when it started (a resumed run compares; a new one writes the file)."""
    now = {f"{stage}.{k}": v for stage in ("traces", "evals", "curate", "train")
           for k, v in as_dict(load(stage)).items()}
    now = json.loads(json.dumps(now, default=str))  # tuples and paths as the file holds them
    path = resolve_path(f"data/nightly/{nightly_id}.settings.json")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(now, indent=1, sort_keys=True))
        return []
    before = json.loads(path.read_text())
    return sorted(k for k in now.keys() | before.keys() if now.get(k) != before.get(k))
