"""The nightly's `focus` stage: train again on the claimed clusters only, judge that adapter on validation again.

Why: the first adapter trains on every chosen cluster, and validation claims only some of them (the rest moved
nothing or churned). On 2026-12-07 (docs/results.md) the unclaimed clusters' examples (the `fluent` clusters' cut
answers, capitals, quotation) were 2/3 of the training set, and the adapter broke 34 validation answers' fluency
while fixing 20; the claimed clusters fixed 1 in 13 holdout traces. Training on the claimed clusters alone spends
every step on what validation supports, and leaves the model elsewhere as it was.

The stage exports the claimed clusters' accepted examples (+ replay, the same share) to `focus_out`, trains them with
the nightly's own recipe, and judges the new adapter as the validate stage judged the first (curate/loop/claims.py
judge: the same validation split, the base's answers reused). The gate then tests this adapter on the clusters
validation claims for it; the first adapter is kept on disk but not gated. Skipped when nothing was claimed, when
every trained cluster was claimed (it would train the same set again), or when `nightly_focus` is off.
"""
from __future__ import annotations

from curate.loop.claims import judge, trained_clusters
from traces.settings import load, resolve_path


class FocusError(RuntimeError):
    pass


def stage_focus(ctx, train_fn=None, outcomes_fn=None) -> dict:
    cs = load("curate")
    train, claims = ctx.done.get("train", {}), ctx.done.get("validate", {})
    claimed = claims.get("claimed")
    if not cs.nightly_focus:
        return {"skipped": True, "why": "nightly_focus is off"}
    if not train.get("adapter") or not claimed:
        return {"skipped": True, "why": "no claimed cluster to focus on"}
    clusters = trained_clusters(train["train_run"])
    if set(claimed) >= set(clusters):
        return {"skipped": True, "why": "every trained cluster was claimed: the adapter is already focused"}
    keep = {c: clusters[c] for c in claimed if c in clusters}
    checks = frozenset(check for check, _ in keep.values())
    manifest = _export(checks)
    result = _train(manifest["out"], train_fn)
    out = judge(ctx, str(result.adapter_dir), keep, outcomes_fn)
    return {"train_run": result.run_id, "adapter": str(result.adapter_dir), "training_set": manifest["out"],
            "exported": manifest["counts"]["example"], "replay": manifest["counts"]["replay"],
            "checks_trained": sorted(checks), "final_loss": result.metrics.get("final_loss"), **out}


def _export(checks: frozenset) -> dict:
    from curate.export import export
    from curate.loop.validation import validation_groups
    from traces import store
    cs = load("curate")
    with store.connect(read_only=True) as con:
        groups = validation_groups(con, cs.sweep_val_fraction)
    return export(out=str(resolve_path(cs.focus_out)), exclude_groups=groups, only_checks=checks)


def _train(training_set: str, train_fn=None):
    if train_fn is None:
        from train.lora import run as train_fn  # imports torch: only when the stage trains
    epochs = load("curate").focus_epochs
    result = train_fn(["--training-set", training_set] + (["--epochs", str(epochs)] if epochs > 0 else []))
    if result.status != "complete":
        raise FocusError(f"focus training run {result.run_id} failed: {result.error}")
    return result


def gated(ctx) -> tuple[dict, dict]:
    """(train summary, claims) the gate uses: the focus stage's adapter and claims when it trained one."""
    focus = ctx.done.get("focus", {})
    if focus.get("adapter"):
        return focus, focus
    return ctx.done.get("train", {}), ctx.done.get("validate", {})
