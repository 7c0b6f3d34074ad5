"""Stub stages for the nightly tests (run in-process and in a subprocess that the test kills).

Each stub appends its name to $STUB_LOG, so a test can count how often a stage ran. The stage named in
$STUB_HANG writes $STUB_LOG and then sleeps until killed, but only on its first run ($STUB_LOG says).
"""
import os
import time
from pathlib import Path


def _log(name: str) -> int:
    log = Path(os.environ["STUB_LOG"])
    with log.open("a") as f:
        f.write(name + "\n")
    return log.read_text().split().count(name)


def make(name: str):
    def stage(ctx):
        runs = _log(name)
        if os.environ.get("STUB_HANG") == name and runs == 1:
            time.sleep(600)
        if os.environ.get("STUB_FAIL") == name and runs == 1:
            raise RuntimeError(f"{name} broke")
        return {"runs": runs}
    return stage


STAGES = [(n, make(n)) for n in ["ingest", "eval", "train", "gate", "report"]]


if __name__ == "__main__":
    import sys

    from curate.loop import nightly
    sys.exit(nightly.run(stages=STAGES))
