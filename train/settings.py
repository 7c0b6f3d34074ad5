from dataclasses import dataclass


@dataclass(frozen=True)
class TrainSettings:
    model: str = "smollm2-135m-instruct"  # model ref of the student: embedded default, local folder or hub id
