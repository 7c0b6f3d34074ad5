"""The nightly report's PNG plots (curate.loop.report): holdout pass rate before/after per suite and cluster with
Wilson 95% intervals, examples kept and dropped per reason, and the LoRA loss curve. Each returns the file written
under `out`, or None when there is nothing to plot. matplotlib is imported on first use (Agg backend).
"""
from __future__ import annotations

from pathlib import Path


def plot_clusters(decision: dict, out: Path) -> Path | None:
    from evals.stats import wilson
    clusters = (decision or {}).get("details", {}).get("clusters") or {}
    suites = (decision or {}).get("details", {}).get("suites") or {}
    groups = [(f"suite {k}", v) for k, v in suites.items()] + [(v["label"][:28], v) for v in clusters.values()]
    if not groups:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(groups)), 4))
    for offset, key, rate, colour, name in [(-0.2, "base_pass", "base_rate", "#999999", "before (baseline)"),
                                            (0.2, "cand_pass", "cand_rate", "#2a7ab0", "after (candidate)")]:
        rates, errs = [], [[], []]
        for _, g in groups:
            lo, hi = wilson(g[key], g["n"])
            rates.append(g[rate])
            errs[0].append(max(0.0, g[rate] - 100 * lo))
            errs[1].append(max(0.0, 100 * hi - g[rate]))
        ax.bar([i + offset for i in range(len(groups))], rates, 0.4, yerr=errs, capsize=3, color=colour, label=name)
    ax.set_xticks(range(len(groups)), [f"{name}\n(n={g['n']})" for name, g in groups], fontsize=7, rotation=20)
    ax.set_ylabel("holdout pass rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Holdout pass rate before/after, Wilson 95% intervals")
    ax.legend(fontsize=8)
    return _save(fig, out / "clusters.png")


def plot_examples(rows: list[tuple], out: Path) -> Path | None:
    if not rows:
        return None
    plt = _pyplot()
    labels = [f"{s}: {r}" if r else s for s, r, _ in rows]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    colours = ["#3a9a4a" if s == "accepted" else "#c0504d" for s, _, _ in rows]
    ax.barh(labels, [n for _, _, n in rows], color=colours)
    ax.invert_yaxis()
    ax.set_xlabel("examples")
    ax.set_title("Synthesized examples: kept (green) and dropped per reason")
    ax.tick_params(axis="y", labelsize=7)
    return _save(fig, out / "examples.png")


def plot_loss(metrics: dict, out: Path) -> Path | None:
    steps = metrics.get("steps") or []
    if not steps:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], label="train loss")
    evals = metrics.get("evals") or []
    if evals:
        ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("LoRA training loss")
    ax.legend()
    return _save(fig, out / "loss.png")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path
