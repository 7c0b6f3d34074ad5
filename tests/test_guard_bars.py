"""The perplexity guard's lm-eval model keeps its request bars out of a log: HFLM passes `disable=False` to tqdm
itself, so only an explicit disable_tqdm reaches them (traces.quiet sets TQDM_DISABLE off a terminal)."""
import pytest


@pytest.mark.parametrize("env, expected", [("1", True), (None, False)])
def test_request_bars_follow_tqdm_disable(monkeypatch, env, expected):
    from lm_eval.models.huggingface import HFLM

    from evals.guards import _quiet_hflm
    seen = []
    monkeypatch.setattr(HFLM, "loglikelihood_rolling", lambda self, requests, disable_tqdm=False: seen.append(disable_tqdm))
    monkeypatch.setattr(HFLM, "_loglikelihood_tokens",
                        lambda self, requests, disable_tqdm=False, **kw: seen.append(disable_tqdm))
    if env is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", env)
    lm = object.__new__(_quiet_hflm())  # no weights: only the two methods are exercised
    lm.loglikelihood_rolling([])
    lm._loglikelihood_tokens([], disable_tqdm=False, override_bs=1)
    assert seen == [expected, expected]
