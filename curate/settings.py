from dataclasses import dataclass


@dataclass(frozen=True)
class CurateSettings:
    mode: str = "compose"  # compose (offline default, weak teacher) | full (strong teacher writes prompts too)
