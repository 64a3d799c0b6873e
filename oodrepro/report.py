"""Metrics tables, summaries over seeds, the paper-comparison table and the summary files.

The tidy table has one row per (benchmark, backbone, seed, model, method, ood_set,
metric); everything else (Markdown summaries, the report) is derived from it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import claims as claim_checks
from . import io, layout
from . import scores as score_registry
from .metrics import KEYS

METRIC_LABELS = {
    "auroc": "AUROC ↑",
    "fpr95": "FPR95 ↓",
    "aupr_in": "AUPR-In ↑",
    "aupr_out": "AUPR-Out ↑",
    "id_accuracy": "ID acc. ↑",
}


def summarize(tidy: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every (backbone, model, method, ood_set, metric), and each
    seed's value in seed order; the std of one seed is undefined (blank), not zero."""
    group = ["benchmark", "arch", "model", "method", "ood_set", "metric"]
    ordered = tidy.sort_values("seed", kind="stable")
    out = ordered.groupby(group, sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    per_seed = ordered.groupby(group, sort=False)["value"].agg(
        lambda v: " / ".join(f"{x:.2f}" for x in v)
    )
    out["per seed"] = per_seed.to_numpy()
    return out.rename(columns={"count": "seeds"})


def _cell(r) -> str:
    """`mean`, or with several seeds `mean ± std (seed 0 / seed 1 / …)`."""
    if int(r["seeds"]) < 2:
        return f"{r['mean']:.2f}"
    return f"{r['mean']:.2f} ± {r['std']:.2f} ({r['per seed']})"


HEADLINE = ["auroc", "fpr95", "aupr_in", "aupr_out", "id_accuracy"]


def headline(part: pd.DataFrame, groups: list[str] = ()) -> pd.DataFrame:
    """One row per (model, method): the mean over OOD sets of each metric, AUROC and FPR95 over
    each group of sets (near, far), and ID accuracy."""
    head = part[part["ood_set"].isin(["mean", "-", *groups])].set_index(["ood_set", "metric"])
    columns = [(m, "mean" if m != "id_accuracy" else "-", METRIC_LABELS[m]) for m in HEADLINE]
    columns[2:2] = [(m, g, f"{METRIC_LABELS[m]} {g}") for g in groups for m in ("auroc", "fpr95")]
    rows = []
    for (model, method), r in head.groupby(["model", "method"], sort=False):
        cells = {
            label: _cell(r.loc[(over, metric)])
            for metric, over, label in columns
            if (over, metric) in r.index
        }
        rows.append({"model": model, "method": method, **cells})
    return pd.DataFrame(rows)


def per_set(part: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (model, method), one column per OOD set."""
    sets = [s for s in part["ood_set"].unique() if s not in ("mean", "-")]
    sub = part[part["metric"] == metric]
    rows = []
    for (model, method), r in sub.groupby(["model", "method"], sort=False):
        r = r.set_index("ood_set")
        rows.append({"model": model, "method": method, **{s: _cell(r.loc[s]) for s in sets}})
    return pd.DataFrame(rows)


def ungrouped(ood: list[str], groups: dict[str, list[str]]) -> list[str]:
    """The OOD sets no group (near, far) holds, in benchmark order."""
    grouped = {s for members in groups.values() for s in members}
    return [s for s in ood if s not in grouped]


OPENOOD_COLUMNS = {
    "fpr95": "FPR@95",
    "auroc": "AUROC",
    "aupr_in": "AUPR_IN",
    "aupr_out": "AUPR_OUT",
    "id_accuracy": "ACC",
}


def openood_table(part: pd.DataFrame, ood: list[str], groups: dict[str, list[str]]) -> pd.DataFrame:
    """One model × method of `summary` in the layout of OpenOOD v1.5's `Evaluator.eval_ood`: a
    row per OOD set, each group's sets followed by the group's mean (`nearood`, `farood`; without
    groups, every set and then `mean`), columns FPR@95, AUROC, AUPR_IN, AUPR_OUT and ACC (the ID
    accuracy, on every row), in percent and averaged over seeds. The metrics follow the run's
    `metrics:` settings."""
    order = []
    for g, members in groups.items():
        order += [(s, s) for s in members] + [(g, f"{g}ood")]
    order += [(s, s) for s in ungrouped(ood, groups)]
    if not groups:
        order.append(("mean", "mean"))
    value = part.set_index(["ood_set", "metric"])["mean"]
    accuracy = value.get(("-", "id_accuracy"), np.nan)
    rows = {
        name: [value.get((where, m), np.nan) for m in list(OPENOOD_COLUMNS)[:-1]] + [accuracy]
        for where, name in order
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(OPENOOD_COLUMNS.values()))


def to_markdown(frame: pd.DataFrame, floatfmt: str = ".2f") -> str:
    def fmt(v):
        if isinstance(v, float):
            return "" if np.isnan(v) else format(v, floatfmt)  # undefined, e.g. one seed's std
        return str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += [
        "| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


def sections(
    summary: pd.DataFrame, groups: list[str] = ()
) -> list[tuple[str, list[tuple[str, pd.DataFrame]]]]:
    """(heading, [(caption, table), ...]) for each benchmark · backbone; `groups` are the OOD
    set groups (near, far) the headline table also averages over."""
    out = []
    for (bench, arch), part in summary.groupby(["benchmark", "arch"], sort=False):
        seeds = int(part["seeds"].max())
        heading = f"{bench} · {arch} ({seeds} seed{'s' if seeds > 1 else ''})"
        over = "Mean over OOD sets" + (f" (and over {', '.join(groups)})" if groups else "")
        tables = [(over, headline(part, groups))]
        tables += [
            (f"{METRIC_LABELS[m]} per OOD set", per_set(part, m)) for m in ("auroc", "fpr95")
        ]
        out.append((heading, tables))
    return out


def watermark_effect(summary: pd.DataFrame, watermarks: dict[str, str]) -> pd.DataFrame:
    """For every `<checkpoint>+<watermark>` model: the watermark's own score (MSP or energy)
    without and with the watermark, mean over OOD sets and over seeds, and ID accuracy."""
    rows = []
    head = summary[summary["ood_set"].isin(["mean", "-"])].set_index(
        ["arch", "model", "method", "metric"]
    )["mean"]
    for (bench, arch, model), _ in summary.groupby(["benchmark", "arch", "model"], sort=False):
        checkpoint, _, name = model.partition("+")
        if name not in watermarks:
            continue
        method = watermarks[name]
        row = {"benchmark": bench, "arch": arch, "watermarked model": model, "score": method}
        for metric in ("auroc", "fpr95", "id_accuracy"):
            for label, m in (("without", checkpoint), ("with", model)):
                row[f"{METRIC_LABELS[metric]} {label}"] = round(
                    float(head.get((arch, m, method, metric), np.nan)), 2
                )
        rows.append(row)
    return pd.DataFrame(rows)


def what_was_run(run: dict) -> list[str]:
    """The summary's opening lines: the benchmark and its sets, backbones, seeds and models, and
    what a claim is here (`run`: benchmark, backbones, seeds, models, paper_data)."""
    bench = run["benchmark"]
    groups = bench.get("groups", {})
    ood = [f"{g}: {', '.join(members)}" for g, members in groups.items()]
    rest = ungrouped(bench["ood"], groups)
    ood += [", ".join(rest)] if rest else []
    seeds = run["seeds"]
    lines = [
        f"Benchmark `{bench['name']}`: trained on `{bench['id_train']}`, ID test set "
        f"`{bench['id_test']}`; OOD sets — {'; '.join(ood)}.",
        f"Backbones: {', '.join(run['backbones'])}. Seeds: {', '.join(map(str, seeds))} "
        f"({len(seeds)} seed{'s' * (len(seeds) > 1)}). Models: {', '.join(run['models'])}.",
    ]
    claim = "Each claim is a paper's statement tested on this benchmark."
    if not run.get("paper_data"):
        claim += (
            " This benchmark is not the papers' data: numbers in a statement and under `paper` are "
            "the paper's own, on its benchmark, shown as context, and a claim may honestly fail or "
            "stay inconclusive here."
        )
    return [*lines, claim]


BALANCE_WORDS = {
    "none": "every ID test and OOD image",
    "first_n": "the first n = min(N_ID, N_OOD) images of each side, per OOD set",
}


def _listed(items: list[str], most: int = 6) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def notes(
    tidy: pd.DataFrame,
    summary: pd.DataFrame,
    blocks: list[pd.DataFrame] = (),
    ownership: list[tuple[dict, dict]] = (),
    groups: list[str] = (),
) -> list[str]:
    """Short, data-driven sentences that say how to read the tables: conventions and sample
    counts, AUROCs below 50, what each fine-tune or watermark cost in ID accuracy, the block
    NormRatio chose and WatermarkNN's ownership threshold. `groups` names the rows that average
    a group of OOD sets (near, far), which are not sets themselves."""
    out = []
    first = tidy.iloc[0]
    sets = [s for s in tidy["ood_set"].unique() if s not in ("mean", "-", *groups)]
    counts = tidy[tidy["ood_set"].isin(sets)].groupby("ood_set", sort=False)["n_ood"].first()
    out.append(
        f"Values in percent. FPR95: rule `{first['fpr_rule']}`, {first['fpr_positive'].upper()} as "
        f"the positive class; AUPR: `{first['aupr_mode']}`; images compared: "
        f"{BALANCE_WORDS[first['balance']]} (`metrics.balance: {first['balance']}`, "
        "docs/conventions.md). `mean` is the arithmetic mean of a metric over the "
        f"{len(sets)} OOD sets; `-` holds ID accuracy. "
        f"ID test images: {int(tidy['n_id'].max()):,}; OOD images: "
        + ", ".join(f"{k} {int(v):,}" for k, v in counts.items())
        + "."
    )
    auroc = summary[(summary["metric"] == "auroc") & summary["ood_set"].isin(sets)]
    low = auroc[auroc["mean"] < 50]
    if len(low):
        out.append(
            "AUROC below 50 means the score ranks that OOD set as more in-distribution than the ID "
            "test "
            "images (for MSP-like scores: the network is more confident on them): "
            + _listed(
                [f"{r.ood_set} for {r.model} / {r.method} ({r.mean:.1f})" for r in low.itertuples()]
            )
            + "."
        )
    accuracy = (
        summary[summary["metric"] == "id_accuracy"]
        .groupby(["arch", "model"], sort=False)["mean"]
        .first()
    )
    for arch in accuracy.index.get_level_values(0).unique():
        per_model = accuracy[arch]
        if "base" in per_model and len(per_model) > 1:
            base = per_model["base"]
            out.append(
                f"ID accuracy of each model against base ({arch}, base {base:.2f}): "
                + ", ".join(
                    f"{m} {v:.2f} ({v - base:+.2f})" for m, v in per_model.items() if m != "base"
                )
                + "."
            )
    out += [_block_note(table) for table in blocks if not table.empty]
    out += [_ownership_note(context, rule) for context, rule in ownership]
    return out


def _block_note(table: pd.DataFrame) -> str:
    """The block NormRatio chose against the per-block AUROC ranking (FeatureNorm)."""
    chosen = table[table["selected"].astype(bool)].iloc[0]
    best = table.loc[table["auroc mean"].idxmax()]
    ctx = f"{chosen['arch']} · {chosen['model']} · seed {chosen['seed']}"
    return (
        f"FeatureNorm ({ctx}): NormRatio chose block {chosen['block']}, ranked "
        f"{int(chosen['auroc rank'])} of {len(table)} blocks by mean AUROC "
        f"({chosen['auroc mean']:.1f}; "
        f"the best, {best['block']}, reaches {best['auroc mean']:.1f}) — chosen without OOD "
        "data."
    )


def _ownership_note(context: dict, rule: dict) -> str:
    """WatermarkNN's ownership threshold, and against null models its false-claim rate."""
    ctx = f"{context['arch']} · seed {context['seed']}"
    if rule["rule"] != "null-models":
        return (
            f"WatermarkNN ({ctx}): ownership is claimed at trigger accuracy ≥ "
            f"{100 * rule['threshold']:.0f} % (a fixed threshold)."
        )
    return (
        f"WatermarkNN ({ctx}): ownership is claimed at trigger accuracy "
        f"≥ {100 * rule['threshold']:.0f} % "
        f"({rule['threshold_count']} of {rule['n_triggers']} triggers). "
        f"{rule['null_models']} clean "
        f"null models reach {100 * rule['null_mean']:.1f} % on average (at most "
        f"{100 * rule['null_max']:.1f} %); with the upper-bounded chance rate "
        f"{100 * rule['chance_rate']:.1f} % a model without the watermark would pass with "
        "probability "
        f"{rule['false_claim_probability']:.1e}."
    )


def analysis_sections(
    analyses: dict[str, list[pd.DataFrame]],
) -> list[tuple[str, list[tuple[str, pd.DataFrame]]]]:
    """A method's own per-run tables (FeatureNorm's blocks, LA-OOD's layers), one section each."""
    out = []
    for heading, tables in analyses.items():
        shown = []
        for t in tables:
            if t.empty:
                continue
            ctx = t.iloc[0]
            t = t.drop(columns=[c for c in KEYS if c in t.columns])
            if "selected" in t:
                t = t.assign(selected=t["selected"].map({True: "✓", False: ""}))
            if "seed" not in ctx:
                caption = f"{ctx['arch']} · mean over seeds"
            elif "model" in ctx:
                caption = f"{ctx['arch']} · {ctx['model']} · seed {ctx['seed']}"
            else:
                caption = f"{ctx['arch']} · seed {ctx['seed']}"
            shown.append((caption, t.round(3)))
        if shown:
            out.append((heading, shown))
    return out


def score_glossary(
    names: list[str], hyperparameters: dict | None = None, search: dict | None = None
) -> pd.DataFrame:
    """What each score of the run is, from the registry's descriptions, and the hyper-parameters
    it ran with: the config's, or a search's (OpenOOD's automatic mode) over its grid."""
    rows = [score_registry.get(n) for n in names]
    hyperparameters, grids = hyperparameters or {}, (search or {}).get("grids", {})

    def used(name: str) -> str:
        fixed = ", ".join(f"{k}={v}" for k, v in hyperparameters.get(name, {}).items())
        if name not in grids:
            return fixed or "none"
        tried = "; ".join(f"{k} in {v}" for k, v in grids[name].items())
        return (
            f"searched: {tried}, by AUROC on {search['id_val']} vs {search['ood_val']} "
            f"(per run: Hyper-parameter search){'; otherwise ' + fixed if fixed else ''}"
        )

    return pd.DataFrame(
        {
            "score": [s.name for s in rows],
            "reads": ["the network" if s.needs == "network" else "cached features" for s in rows],
            "hyper-parameters": [used(s.name) for s in rows],
            "what it is": [s.description for s in rows],
        }
    )


def _all_sections(summary, comparison, analyses, glossary=None, groups=()):
    out = sections(summary, groups) + analysis_sections(dict(analyses or {}))
    if comparison is not None and len(comparison):
        out.append(("Paper vs ours", [(comparison.attrs.get("source", ""), comparison)]))
    if glossary is not None and len(glossary):
        out.append(("Scores", [("", glossary)]))
    return out


WATERMARK_EFFECT = (
    "Watermarking for OOD: each watermarked model beside its unwatermarked checkpoint"
)


def write_summary(
    out,
    *,
    metrics_files: list,
    tables: dict[str, list],
    titles: dict[str, str],
    ownership: list,
    claims,
    title: str,
    banner: str | None,
    reference: dict,
    watermarks: dict[str, str],
    score_names: list[str],
    groups: list[str] = (),
    hyperparameters: dict | None = None,
    search: dict | None = None,
    run: dict,
    overviews: dict[str, str],
) -> None:
    """The run's summary files (`out`: tidy, summary, comparison, markdown, html) from its
    outputs: the per-model metric files, each method's per-model tables (`tables`, key → files;
    a section each, headed `titles[key]`), WatermarkNN's ownership decisions and the claims;
    `run` says what was run (`what_was_run`); `overviews` are each backbone's overview figure,
    relative to the summary (drawn by their own jobs from the same metric files)."""
    tidy = pd.concat([pd.read_csv(f) for f in metrics_files], ignore_index=True)
    frames = {key: [pd.read_csv(f) for f in files] for key, files in tables.items()}
    summary = summarize(tidy)
    comparison = comparison_table(summary, reference)
    analyses = {titles[key]: frames[key] for key in titles}
    analyses[WATERMARK_EFFECT] = [watermark_effect(summary, watermarks)]
    owned = [
        (table.iloc[0].to_dict(), json.loads(Path(decision).read_text()))
        for table, decision in zip(
            frames.get(layout.WATERMARKNN_ATTACKS, []), ownership, strict=True
        )
    ]
    said = notes(tidy, summary, frames.get(layout.FEATURENORM_BLOCKS, []), owned, groups)
    claims = pd.read_csv(claims)
    glossary = score_glossary(score_names, hyperparameters, search)
    if not len(comparison):
        said.append(
            "No paper numbers are stored for this config (`report.reference`), so there is no "
            "'Paper vs ours' table and no comparison.csv."
        )
    io.save_csv(out.tidy, tidy)
    io.save_csv(out.summary, summary)
    if len(comparison):
        io.save_csv(out.comparison, comparison)
    figures = [("The claims: each difference with its interval against its bound", "claims.png")]
    figures = figures if len(claims) else []
    figures += [
        (f"{arch}: every model and method on every OOD set, and each model against base", path)
        for arch, path in overviews.items()
    ]
    bench = run["benchmark"]
    for (arch, model, method), part in summary.groupby(["arch", "model", "method"], sort=False):
        table = openood_table(part, bench["ood"], bench.get("groups", {}))
        # the index as an unnamed first column, as OpenOOD's own `to_csv` of that frame writes it
        io.save_csv(Path(out.openood) / arch / model / f"{method}.csv", table.reset_index(names=""))
    for path, render in ((out.markdown, markdown_summary), (out.html, html_summary)):
        io.save_text(
            path,
            render(
                summary,
                comparison,
                title,
                analyses,
                banner,
                said,
                claims,
                glossary,
                run=what_was_run(run),
                groups=groups,
                figures=figures,
            ),
        )


def markdown_summary(
    summary: pd.DataFrame,
    comparison: pd.DataFrame | None = None,
    title: str = "",
    analyses: dict | None = None,
    banner: str | None = None,
    notes: list[str] = (),
    claims: pd.DataFrame | None = None,
    glossary: pd.DataFrame | None = None,
    *,
    run: list[str] = (),
    groups: list[str] = (),
    figures: list[tuple[str, str]] = (),
) -> str:
    """The summary as Markdown; `banner` (a rehearsal's) heads it in bold, `run` (what was run)
    opens it, the claims' verdicts follow, then `figures` ((caption, path relative to the
    summary): the forest plot, each backbone's overview) and `notes`; the scores' `glossary`
    closes it."""
    lines = [f"# {title}", ""] if title else []
    lines += [f"**{banner}**", ""] if banner else []
    lines += ["## What was run", "", *(f"- {n}" for n in run), ""] if run else []
    if claims is not None and len(claims):
        lines += [
            "## Claims",
            "",
            claim_checks.caption(claims),
            "",
            to_markdown(claim_checks.table(claims)),
            "",
        ]
    lines += [f"![{caption}]({path})\n" for caption, path in figures]
    lines += ["## Reading these tables", "", *(f"- {n}" for n in notes), ""] if notes else []
    for heading, tables in _all_sections(summary, comparison, analyses, glossary, groups):
        lines += [f"## {heading}", ""]
        for caption, table in tables:
            lines += ([f"**{caption}**", ""] if caption else []) + [to_markdown(table), ""]
    return "\n".join(lines)


def _bullets(heading: str, items: list[str]) -> str:
    return (
        f"<h2>{heading}</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in items) + "</ul>"
    )


def html_summary(
    summary: pd.DataFrame,
    comparison: pd.DataFrame | None = None,
    title: str = "",
    analyses: dict | None = None,
    banner: str | None = None,
    notes: list[str] = (),
    claims: pd.DataFrame | None = None,
    glossary: pd.DataFrame | None = None,
    *,
    run: list[str] = (),
    groups: list[str] = (),
    figures: list[tuple[str, str]] = (),
) -> str:
    """The same summary as HTML (`markdown_summary`'s arguments)."""
    parts = [f"<h1>{title}</h1>"] if title else []
    if banner:
        parts.append(
            f"<p style='background:#fde2e1;border:2px solid #c0392b;padding:.6em;font-weight:bold'>"
            f"{html.escape(banner)}</p>"
        )
    if run:
        parts.append(_bullets("What was run", run))
    if claims is not None and len(claims):
        parts.append(
            f"<h2>Claims</h2><p>{html.escape(claim_checks.caption(claims))}</p>"
            + claim_checks.table(claims).to_html(
                index=False, border=0, float_format="%.2f", na_rep=""
            )
        )
    parts += [
        f"<figure><img src='{html.escape(path)}' alt='{html.escape(caption)}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, path in figures
    ]
    if notes:
        parts.append(_bullets("Reading these tables", notes))
    for heading, tables in _all_sections(summary, comparison, analyses, glossary, groups):
        parts.append(f"<h2>{heading}</h2>")
        for caption, table in tables:
            parts.append(
                (f"<h3>{caption}</h3>" if caption else "")
                + table.to_html(index=False, border=0, float_format="%.2f", na_rep="")
            )
    style = (
        "<style>body{font-family:sans-serif;margin:1.5em} "
        "table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{padding:3px 9px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top;"
        "max-width:26em} th{background:#f3f3f3} li{margin-bottom:.3em} "
        "img{max-width:100%;border:1px solid #ddd}</style>"
    )
    head = f"<!DOCTYPE html><html><head><meta charset='utf-8'>{style}</head>"
    return f"{head}<body>{''.join(parts)}</body></html>\n"


def comparison_table(summary: pd.DataFrame, reference: dict) -> pd.DataFrame:
    """Ours beside the paper's numbers, keyed by arch, model and method, for every reference row
    we can match. Where the paper gives its std (over its seeds or checkpoints), ours is flagged
    when its mean is farther from the paper's than that std."""
    rows = []
    for ref in reference.get("rows", []):
        mask = (
            (summary["method"] == ref["method"])
            & (summary["ood_set"] == ref["ood_set"])
            & (summary["metric"] == ref["metric"])
        )
        if "arch" in ref:
            mask &= summary["arch"] == ref["arch"]
        mask &= summary["model"] == ref.get("model", "base")
        ours = summary[mask]
        arch = ref.get("arch", ", ".join(ours["arch"].unique()))
        rows.append(
            {
                "arch": arch,
                "model": ref.get("model", "base"),
                **{k: ref[k] for k in ("method", "ood_set", "metric")},
                "paper": ref["value"],
                "paper std": ref.get("std", np.nan),
                "ours": ours["mean"].iloc[0] if len(ours) else np.nan,
                "ours std": ours["std"].iloc[0] if len(ours) else np.nan,
                "seeds": int(ours["seeds"].iloc[0]) if len(ours) else 0,
            }
        )
    columns = [
        "arch",
        "model",
        "method",
        "ood_set",
        "metric",
        "paper",
        "paper std",
        "ours",
        "ours std",
    ]
    frame = pd.DataFrame(rows, columns=[*columns, "seeds"])
    frame["difference"] = frame["ours"] - frame["paper"]
    frame["beyond paper std"] = np.where(
        frame["paper std"].notna() & frame["ours"].notna(),
        np.where(frame["difference"].abs() > frame["paper std"], "yes", "no"),
        "",
    )
    if frame["paper std"].isna().all():
        frame = frame.drop(columns=["paper std", "beyond paper std"])
    frame.attrs["source"] = reference.get("source", "")  # the section's caption
    return frame
