"""The committed sample traffic (examples/traffic/), as tests read it."""
import gzip
import itertools
import json
from pathlib import Path

PATH = Path(__file__).resolve().parents[2] / "examples" / "traffic" / "sample-traffic.jsonl.gz"


def logs(n: int | None = None) -> list[dict]:
    """The first n logged calls (all when None). References measured on "the 1,000 answers" pass n=1000: the log was
    1,000 calls then, and is 2,000 since 2026-12-07 (its first 1,000 lines unchanged)."""
    with gzip.open(PATH, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, n)]


def answers(n: int | None = None) -> list[str]:
    return [log["response"]["choices"][0]["message"]["content"] for log in logs(n)]
