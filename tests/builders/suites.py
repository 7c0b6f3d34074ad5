"""The instruction_following suite as it was before it also checked fluency (version 1: IFEval instructions only),
for tests of the runner, clusters, reports and gate whose counts are about instructions: their synthetic answers
("Sure, here it is.") are not meant to be judged as prose. tests/test_fluency.py covers the packaged suite."""
import pytest

INSTRUCTIONS_ONLY = """name: instruction_following
version: "1"
description: IFEval instructions named in each trace's metadata (the test suite without the fluent check)
higher_is_better: true
select:
  where: "json_array_length(json_extract(metadata, '$.instruction_id_list')) > 0"
checks:
  from_metadata: instructions
"""


@pytest.fixture(autouse=True)
def instructions_only(tmp_path, monkeypatch):
    folder = tmp_path / "suites"
    folder.mkdir(exist_ok=True)
    (folder / "instruction_following.yaml").write_text(INSTRUCTIONS_ONLY)
    monkeypatch.setenv("MEND_EVALS_SUITES_DIR", str(folder))
