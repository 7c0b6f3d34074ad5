from dataclasses import dataclass


@dataclass(frozen=True)
class EvalsSettings:
    suites: tuple = ("instruction_following",)  # suites the runner, nightly and gate use
