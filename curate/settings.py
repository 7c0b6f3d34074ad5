"""Settings of the `curate` stage ([tool.mend.curate], MEND_CURATE_<KEY>)."""
from dataclasses import dataclass


@dataclass(frozen=True)
class CurateSettings:
    # --- teacher, synthesis, filters, export (owned by curate/teacher.py, synth.py, filters.py, export.py) ---
    mode: str = "compose"  # compose (offline default, weak teacher) | full (strong teacher writes prompts too)
    # --- review (owned by curate/review.py) ---
