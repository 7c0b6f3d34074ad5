"""Shared fixtures: every test gets its own DuckDB file under tmp_path; no network."""
import os

import pytest


@pytest.fixture(autouse=True)
def mend_env(tmp_path, monkeypatch):
    """Point the store into tmp_path and drop any MEND_* settings from the caller's environment."""
    for key in list(os.environ):
        if key.startswith("MEND_") and key != "MEND_HOME":
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEND_DB", str(tmp_path / "mend.duckdb"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return tmp_path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny SmolLM2-architecture model with the real tokenizer (built in well under a second)."""
    from train.tiny import make_tiny_model
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def one_thread():
    """The tiny model's matmuls are too small to split: one thread avoids OpenMP barriers, which on a busy
    2-core machine cost more than the math (measured 30x on a 200x64 linear). Modules that train or generate opt in
    with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
