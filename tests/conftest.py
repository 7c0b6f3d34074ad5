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
