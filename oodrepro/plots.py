"""Every figure the workflow draws: score histograms and ROC curves, training curves, the
per-block and per-layer analyses, the claims' forest plot, a backbone's overview, a learned
input watermark and the WatermarkNN attack curves. Figures are returned, not saved
(`io.save_figure` writes them), and matplotlib is imported on first use: most jobs draw nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import metrics

if TYPE_CHECKING:  # annotations only: the analysis jobs that draw run without torch
    import torch

    from .models import Backbone


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (jobs have no display); imported late
    because most jobs draw nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _confidence(s: np.ndarray) -> np.ndarray:
    return -np.log10(np.clip(1.0 - s, 1e-12, None))


def plot_scores(s_id: np.ndarray, s_ood: dict[str, np.ndarray], title: str):
    """Score histograms of ID against each OOD set, and the ROC curves, in one figure."""
    plt = pyplot()
    xlabel = "score"
    if all(np.all((v >= 0) & (v <= 1)) for v in (s_id, *s_ood.values())):
        # Probabilities pile up at 1: show −log10(1 − s) so that the confident end is readable.
        s_id, s_ood = _confidence(s_id), {k: _confidence(v) for k, v in s_ood.items()}
        xlabel = "−log₁₀(1 − score)"
    n = len(s_ood)
    cols = min(4, n + 1)
    rows = int(np.ceil((n + 1) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    axes = axes.ravel()
    everything = np.concatenate([s_id, *s_ood.values()])
    lo, hi = np.percentile(everything, [0.5, 99.5])
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 50)
    for ax, (name, s) in zip(axes, s_ood.items(), strict=False):
        ax.hist(
            np.clip(s_id, bins[0], bins[-1]),
            bins,
            alpha=0.55,
            density=True,
            label="ID",
            color="tab:blue",
            histtype="stepfilled",
        )  # one patch a histogram, not one a bin: quicker to build and draw
        ax.hist(
            np.clip(s, bins[0], bins[-1]),
            bins,
            alpha=0.55,
            density=True,
            label=name,
            color="tab:red",
            histtype="stepfilled",
        )
        ax.set_title(f"{name} (AUROC {100 * metrics.auroc(s_id, s):.1f})", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    roc = axes[n]
    for name, s in s_ood.items():
        fpr, tpr = metrics.roc_curve(s_id, s)
        roc.plot(fpr, tpr, label=name, lw=1.2)
    roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    roc.set_xlabel("FPR (OOD accepted)", fontsize=8)
    roc.set_ylabel("TPR (ID accepted)", fontsize=8)
    roc.set_title("ROC, ID positive", fontsize=9)
    roc.legend(fontsize=6)
    for ax in axes[n + 1 :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_training(
    log: pd.DataFrame, title: str, level: float | None = None, reference: float | None = None
):
    """Training loss (with a fine-tune's UM `level` as a dashed line) and training and test
    accuracy per epoch (with the start model's test accuracy, `reference` in %, dotted)."""
    plt = pyplot()

    fig, ax = plt.subplots(1, 2, figsize=(8, 2.8))
    ax[0].plot(log["epoch"], log["loss"], marker=".", label="training loss")
    if level is not None:
        ax[0].axhline(level, color="#c0392b", ls="--", lw=1, label=f"UM level {level:.3f}")
    ax[0].set_title("training loss", fontsize=9)
    ax[1].plot(log["epoch"], 100 * log["accuracy"], marker=".", label="training")
    if "test_accuracy" in log:
        ax[1].plot(log["epoch"], 100 * log["test_accuracy"], marker=".", label="test")
    if reference is not None:
        ax[1].axhline(
            reference, color="grey", ls=":", lw=1.2, label=f"start model, test {reference:.2f}"
        )
    ax[1].set_title("accuracy (%)", fontsize=9)
    for a in ax:
        a.set_xlabel("epoch", fontsize=8)
        if len(a.get_legend_handles_labels()[0]) > 1:
            a.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _per_layer(
    names,
    bars: list[tuple[str, np.ndarray, object]],
    bar_label: str,
    line: np.ndarray,
    line_label: str,
    title: str,
    width: float,
):
    """Bars per layer (one or more series) with a line on a second axis: the shape of the
    FeatureNorm block and LA-OOD layer plots."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(max(5, width * len(names) + 2.5), 3.3))
    x = np.arange(len(names))
    step = 0.8 / len(bars)
    for i, (label, values, colour) in enumerate(bars):
        ax.bar(
            x + (i - (len(bars) - 1) / 2) * step, values, step, label=label, color=colour, alpha=0.8
        )
    ax.set_ylabel(bar_label, fontsize=8)
    ax.set_xticks(
        x,
        names,
        rotation=90 if len(names) > 12 else 45,
        ha="center" if len(names) > 12 else "right",
        fontsize=6 if len(names) > 12 else 7,
    )
    if len(bars) > 1:
        ax.legend(fontsize=7, loc="upper left")
    twin = ax.twinx()
    twin.plot(x, line, "k.-", lw=1)
    twin.set_ylabel(line_label, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_blocks(table: pd.DataFrame, title: str):
    """NormRatio per block (the selected one highlighted) beside FeatureNorm's mean AUROC."""
    colours = ["tab:orange" if sel else "tab:blue" for sel in table["selected"]]
    return _per_layer(
        table["block"],
        [("NormRatio", table["normratio"], colours)],
        "NormRatio (bars; orange = selected)",
        table["auroc mean"],
        "FeatureNorm mean AUROC (line)",
        title,
        0.55,
    )


def plot_layers(table: pd.DataFrame, title: str):
    """LA-OOD: each layer's own AUROC (line) and how often it decides the combined score (bars)."""
    return _per_layer(
        table["layer"],
        [
            ("decides on OOD", table["decides OOD"], "tab:red"),
            ("decides on ID", table["decides ID"], "tab:blue"),
        ],
        "share of inputs where the layer decides (its d is the min over layers)",
        table["auroc mean"],
        "layer's own mean AUROC (line)",
        title,
        0.18,
    )


COLOURS = {
    "holds": "#1a7f37",
    "smaller than claimed": "#d68910",
    "fails": "#c0392b",
    "inconclusive": "#7f7f7f",
    "out of regime": "#8e44ad",
    "interim": "#a9c4e0",
    "no verdict": "#c8c8c8",
}


def plot_claims(table: pd.DataFrame, title: str):
    """A forest plot: each claim's difference with its interval (at its row's level), coloured
    by verdict, against the bound it must clear; a diamond marks the paper's effect."""
    plt = pyplot()
    n = max(1, len(table))
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * n + 1.6))
    for y, (_, r) in enumerate(table.iterrows()):
        bound = float(r["claimed"].split()[-1])
        colour = COLOURS[r["verdict"]]
        style = ":" if r["verdict"] == "no verdict" else "-"
        ax.plot([r["ci low"] - bound, r["ci high"] - bound], [y, y], color=colour, lw=2, ls=style)
        ax.plot([r["difference"] - bound], [y], "o", color=colour)
        if pd.notna(r["paper effect"]):
            ax.plot([r["paper effect"] - bound], [y], "D", mfc="none", color="k", ms=6)
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_yticks(
        range(len(table)),
        [
            f"{c} · {a} · {s} seed{'s' * (s > 1)} · {100 * lv:g} %"
            for c, a, s, lv in zip(
                table["claim"], table["arch"], table["seeds"], table["level"], strict=True
            )
        ],
    )
    ax.invert_yaxis()
    ax.set_xlabel("difference − claimed bound (points; right of 0 = the claim's side)")
    handles = [
        plt.Line2D([], [], color=c, lw=2, ls=":" if v == "no verdict" else "-", label=v)
        for v, c in COLOURS.items()
        if v in set(table["verdict"])
    ]
    if table["paper effect"].notna().any():
        handles.append(plt.Line2D([], [], marker="D", mfc="none", color="k", ls="", label="paper"))
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_watermark(w: torch.Tensor, model: Backbone, title: str):
    """w in pixel units (×std), amplified to the full range, per channel and as colour."""
    plt = pyplot()

    pixel = (w.reshape(3, 32, 32) * model.std.reshape(3, 1, 1).cpu()).numpy()
    scale = np.abs(pixel).max() or 1.0
    fig, axes = plt.subplots(1, 4, figsize=(9, 2.6))
    axes[0].imshow(np.clip(0.5 + 0.5 * pixel.transpose(1, 2, 0) / scale, 0, 1))
    axes[0].set_title("w (amplified)", fontsize=8)
    for c, ax in enumerate(axes[1:]):
        im = ax.imshow(pixel[c], cmap="coolwarm", vmin=-scale, vmax=scale)
        ax.set_title("RGB"[c] + " channel", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(im, ax=axes, fraction=0.02, label="pixel units")
    fig.suptitle(f"{title} · max |w| = {scale:.3f} pixel units", fontsize=9)
    return fig


def plot_attacks(
    curves: dict[str, pd.DataFrame], verification: pd.DataFrame, threshold: float, title: str
):
    """Per owner model: test and trigger accuracy after each attack epoch (epoch 0 = before)."""
    plt = pyplot()
    start = verification.set_index("network").to_dict("index")
    owners = sorted({name.partition(".")[0] for name in curves})
    fig, axes = plt.subplots(len(owners), 2, figsize=(9, 2.8 * len(owners)), squeeze=False)
    for row, owner in zip(axes, owners, strict=True):
        for name, log in curves.items():
            if name.partition(".")[0] != owner:
                continue
            attack_name = name.partition(".")[2]
            for ax, col in zip(row, ("test_accuracy", "trigger_accuracy"), strict=True):
                epochs = [0, *log["epoch"]]
                ax.plot(
                    epochs,
                    [100 * start[owner][col], *(100 * log[col])],
                    marker=".",
                    label=attack_name,
                )
        row[0].set_title(f"{owner}: test accuracy (%)", fontsize=9)
        row[1].set_title(f"{owner}: trigger accuracy (%)", fontsize=9)
        row[1].axhline(100 * threshold, color="k", ls="--", lw=0.8, label="ownership threshold")
        row[1].set_ylim(0, 102)
        for ax in row:
            ax.set_xlabel("attack epoch", fontsize=8)
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _heatmap(ax, table: pd.DataFrame, metric: str):
    """One model's methods × OOD sets of one metric, with its values written in the cells."""
    higher = metric != "fpr95"
    cmap = "viridis" if higher else "viridis_r"
    ax.imshow(table.to_numpy(float), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(table.shape[0]), table.index, fontsize=7)
    for (i, j), v in np.ndenumerate(table.to_numpy(float)):
        if np.isfinite(v):
            good = v > 60 if higher else v < 40
            ax.text(
                j, i, f"{v:.0f}", ha="center", va="center", fontsize=6, color="k" if good else "w"
            )


def plot_overview(tidy: pd.DataFrame, title: str, sets: list[str], base: str = "base"):
    """One backbone at a glance: per model, AUROC and FPR95 of each method on each OOD set (means
    over seeds; `sets` in order, then the groups and the mean); then, for every other model, the
    change of each score's mean AUROC against `base`, with the spread over seeds as error bars."""
    plt = pyplot()
    ood = tidy[tidy["ood_set"].isin(sets)]
    means = ood.groupby(["model", "method", "ood_set", "metric"], sort=False)["value"].mean()
    models = list(dict.fromkeys(ood["model"]))
    heights = [max(1.0, 0.28 * ood[ood["model"] == m]["method"].nunique() + 0.9) for m in models]
    others = [m for m in models if m != base]
    fig = plt.figure(
        figsize=(max(8.0, 1.1 * len(sets) + 3), sum(heights) + 3.0 * bool(others)),
        layout="constrained",
    )
    grid = fig.add_gridspec(
        len(models) + bool(others), 2, height_ratios=heights + [3.0] * bool(others)
    )
    for row, model in enumerate(models):
        for col, metric in enumerate(("auroc", "fpr95")):
            ax = fig.add_subplot(grid[row, col])
            table = means[model].xs(metric, level="metric").unstack("ood_set")
            _heatmap(ax, table.reindex(columns=sets), metric)
            ax.set_title(f"{model} · {'AUROC ↑' if metric == 'auroc' else 'FPR95 ↓'}", fontsize=8)
    if others:
        _delta_chart(fig.add_subplot(grid[-1, :]), tidy, base, others)
    fig.suptitle(title, fontsize=10)
    return fig


def _delta_chart(ax, tidy: pd.DataFrame, base: str, models: list[str]):
    """Mean AUROC over OOD sets of each model minus the base's, per score and per seed: bars at
    the mean over seeds, error bars ± one std of the seeds (none for one seed)."""
    mean = tidy[(tidy["ood_set"] == "mean") & (tidy["metric"] == "auroc")]
    per_seed = mean.pivot_table(index=["method", "seed"], columns="model", values="value")
    compared = per_seed[[m for m in models if m in per_seed]].notna().any(axis=1)
    methods = list(dict.fromkeys(compared[compared].index.get_level_values("method")))
    width = 0.8 / max(1, len(models))
    for k, model in enumerate(models):
        if model not in per_seed or base not in per_seed:
            continue
        delta = (per_seed[model] - per_seed[base]).dropna().groupby("method")
        shown = [m for m in methods if m in delta.groups]
        centre = delta.mean().reindex(shown)
        spread = delta.std().reindex(shown)  # NaN with one seed: no error bar
        x = np.array([methods.index(m) for m in shown]) + (k - (len(models) - 1) / 2) * width
        ax.bar(x, centre, width, yerr=spread.fillna(0), capsize=2, label=model)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"AUROC − {base} (points)", fontsize=8)
    ax.set_title(f"each model against {base}: mean AUROC over the OOD sets", fontsize=8)
    ax.legend(fontsize=6, ncol=min(4, len(models)))
