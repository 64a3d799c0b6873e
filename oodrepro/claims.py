"""The papers' headline claims as checked statements (docs/claims.md).

A claim is one difference whose sign is what the paper says, measured per seed on the run's
files, with paired bootstrap draws over the test images; `decision` turns the seeds and draws
into an interval and a verdict under the seed schedule. Each kind of claim is a class of
`claim_kinds`; this module checks a config's claims and decides them across seeds.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pandas as pd

from . import regime
from .claim_kinds import Context, Draws, Kind, bind, sets_of
from .decision import INTERIM, NO_VERDICT, OUT_OF_REGIME, VERDICTS, Schedule, sigma_upper
from .layout import RunFolder


def files(claim: dict, run: str, bench: dict, config: dict) -> dict:
    """Every file one run folder gives the claim: its kind's, and under `requires` those of its
    preconditions (`regime`), keyed by their position."""
    folder = RunFolder(run)
    kept = regime.files(claim, folder, bench, config)
    return {
        **bind(claim).files(folder, bench),
        "requires": {str(i): f for i, f in enumerate(kept)},
    }


def flat(tree) -> list[str]:
    """Every path in a nested `files` mapping."""
    if isinstance(tree, dict):
        return [p for v in tree.values() for p in flat(v)]
    return [tree]


# --------------------------------------------------------------------------- validation
def problems(config: dict) -> list[str]:
    """What a config's claims name that the config does not produce, each naming its key."""
    out, seen = [], set()
    bench = config["benchmark"]
    overs = {"mean", *bench["ood"], *bench.get("groups", {})}
    reference = config["report"].get("reference", {}).get("rows", [])
    for i, claim in enumerate(config.get("claims", [])):
        key, kind = f"claims[{i}] ({claim['id']})", bind(claim)
        if claim["id"] in seen:
            out.append(f"{key}.id: used by an earlier claim")
        seen.add(claim["id"])
        if claim.get("over", "mean") not in overs:
            out.append(f"{key}.over: {claim['over']!r} is not 'mean', a group or an OOD set")
        out += [f"{key}.{field}: {message}" for field, message in kind.problems(config)]
        out += [f"{key}.{message}" for message in regime.problems(claim, config)]
        for side, value in claim.get("paper", {}).items():
            where = kind.reference(side)
            rows = [
                r["value"]
                for r in reference
                if where
                and all(r.get(k, "base" if k == "model" else None) == v for k, v in where.items())
            ]
            if rows and value not in rows:
                out.append(
                    f"{key}.paper.{side}: {value} differs from report.reference's {rows[0]} for "
                    + ", ".join(f"{k} {v}" for k, v in where.items())
                )
    return out


# --------------------------------------------------------------------------- across seeds
MORE_SEEDS = "make run SEEDS={seeds} [CONFIG=<preset>]"  # a row's advice
_SHARED = "every seed starts from the one released model: the seeds vary what is trained on it"


def _ours(values: list[float]) -> str:
    if not values:
        return ""
    mean = float(np.mean(values))
    return f"{mean:.2f} ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else f"{mean:.2f}"


def evaluate(
    claims: list[dict],
    runs: dict[str, dict[int, dict]],
    bench: dict,
    metrics_settings: dict,
    uncertainty: dict,
    watermarknn: dict | None = None,
    shared_backbones: tuple[str, ...] = (),
    more_seeds: str = MORE_SEEDS,
) -> pd.DataFrame:
    """One row per claim and backbone (`runs[arch][seed][claim id]` are the claim's files in that
    run folder, seeds in the config's order): the paper's values, ours, the difference, its
    interval, the verdict under the schedule and the seeds to decide. `shared_backbones` are
    those whose seeds all start from one released model; `more_seeds` is the command that adds
    seeds, with `{seeds}` for their number."""
    draws = Draws(uncertainty["draws"], uncertainty["seed"])
    schedule = Schedule.of(uncertainty)
    wnn = watermarknn or {}
    rows = []
    for claim in claims:
        kind = bind(claim)
        for arch, seeds in runs.items():
            ctx = Context(
                draws,
                metrics_settings,
                bench["id_test"],
                sets_of(claim, bench["ood"], bench.get("groups", {})),
                list(wnn.get("owners", {})),
                list(wnn.get("attacks", {}).get("kinds", [])),
            )
            points, boots, sides = [], [], collections.defaultdict(list)
            unmet = []
            for seed, paths in seeds.items():
                kept = paths[claim["id"]].get("requires", {})
                unmet += regime.failures(claim, list(kept.values()), seed)
                point, boot, seen = kind.evaluate(
                    paths[claim["id"]], dataclasses.replace(ctx, seed=seed)
                )
                points.append(point)
                boots.append(boot)
                for side, v in seen.items():
                    sides[side].append(v)
            row = _row(kind, schedule, np.array(points), np.stack(boots), more_seeds)
            if unmet:  # judged or not, the claim was not run in its paper's regime
                row["verdict"], row["seeds to decide"] = OUT_OF_REGIME, "—"
                said = f"out of regime: {'; '.join(unmet)}"
                row["note"] = "; ".join(filter(None, [said, row["note"]]))
            if arch in shared_backbones:
                row["note"] = "; ".join(filter(None, [row["note"], _SHARED]))
            paper = claim.get("paper", {})
            rows.append(
                {
                    "claim": claim["id"],
                    "kind": kind.name,
                    "arch": arch,
                    "statement": claim["statement"],
                    "source": claim["source"],
                    "compares": kind.compares(),
                    "paper a": paper.get("a", np.nan),
                    "paper b": paper.get("b", np.nan),
                    "ours a": _ours(sides["a"]),
                    "ours b": _ours(sides["b"]),
                    "detail": kind.detail({k: float(np.mean(v)) for k, v in sides.items()}),
                    **row,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(kind: Kind, schedule: Schedule, points, draws, more_seeds: str) -> dict:
    """The columns that come from the seeds and draws (docs/claims.md, "Reading a row")."""
    bound, effect = kind.bound, kind.effect()
    judged = schedule.judge(points, draws, bound, kind.strict, effect)
    ci, seeds = judged.interval, len(points)
    claimed_side = points > bound if kind.strict else points >= bound
    notes = []
    if judged.verdict == NO_VERDICT:
        first = schedule.looks[0]
        notes.append(
            f"{seeds} seed{'s' * (seeds > 1)}: training variance unknown; the first look needs "
            f"{first}: {more_seeds.format(seeds=first)}"
        )
    elif judged.decided_at is not None and judged.look != seeds:
        notes.append(
            f"decided at {judged.look} seeds ({100 * judged.decided_at:g} %); "
            f"the interval shown is on all {seeds}"
        )
    elif judged.decided_at is None:
        later = [look for look in schedule.looks if look > seeds]
        if later:
            notes.append(f"next look: {more_seeds.format(seeds=later[0])}")
        elif seeds > schedule.looks[-1]:
            notes.append(f"past the schedule: judged on the first {schedule.looks[-1]} seeds")
    to_decide = (
        "—" if judged.decided_at is not None else schedule.seeds_to_decide(ci, bound, effect)
    )
    power_s = power_upper = "—"
    if effect is not None and seeds > 1:
        power_s = schedule.seeds_for_power(effect - bound, ci.std)
        upper = sigma_upper(ci.std, seeds)
        power_upper = f"{schedule.seeds_for_power(effect - bound, upper)} (σ ≤ {upper:.2f})"
    return {
        "paper effect": np.nan if effect is None else effect,
        "difference": ci.mean,
        "ci low": ci.low,
        "ci high": ci.high,
        "level": ci.level,
        "seed half-width": ci.seed_half,
        "test half-width": ci.test_half,
        "shared test share": ci.shared_share,
        "std over seeds": ci.std if seeds > 1 else np.nan,  # undefined for one seed
        "claimed": f"{'>' if kind.strict else '≥'} {bound:g}",
        "seeds": seeds,
        "on claimed side": f"{int(claimed_side.sum())} of {seeds}",
        "look": "" if judged.look is None else judged.look,
        "verdict": judged.verdict,
        "seeds to decide": to_decide,
        "seeds for 80 % power": power_s,
        "seeds for 80 % power (σ upper 95 %)": power_upper,
        "note": "; ".join(notes),
    }


COLUMNS = [
    "claim",
    "kind",
    "arch",
    "statement",
    "source",
    "compares",
    "paper a",
    "paper b",
    "paper effect",
    "ours a",
    "ours b",
    "detail",
    "difference",
    "ci low",
    "ci high",
    "level",
    "seed half-width",
    "test half-width",
    "shared test share",
    "std over seeds",
    "claimed",
    "seeds",
    "on claimed side",
    "look",
    "verdict",
    "seeds to decide",
    "seeds for 80 % power",
    "seeds for 80 % power (σ upper 95 %)",
    "note",
]


# --------------------------------------------------------------------------- the table
def table(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims as a reader wants them (docs/claims.md, "Reading a row"): paper and ours, the
    difference with its interval and level as one cell, its two half-widths, the verdict and
    the seeds it would take to decide; columns that no row fills are left out."""

    def num(v, fmt=".2f"):
        return v if isinstance(v, str) else ("" if pd.isna(v) else format(v, fmt))

    shown = claims[["claim", "arch"]].copy()
    shown["the difference"] = claims["compares"]
    for column in ("paper a", "paper b", "ours a", "ours b", "detail"):
        shown[column] = [num(v) for v in claims[column]]
    shown["difference [interval]"] = [
        f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] at {100 * lv:g} %"
        for d, lo, hi, lv in zip(
            claims["difference"], claims["ci low"], claims["ci high"], claims["level"], strict=True
        )
    ]
    shown["± seeds / test"] = [
        f"{'?' if pd.isna(a) else format(a, '.2f')} / {b:.2f}"
        for a, b in zip(claims["seed half-width"], claims["test half-width"], strict=True)
    ]
    shown["shared"] = [num(v, ".0%") for v in claims["shared test share"]]
    shown["claimed"] = claims["claimed"]
    shown["paper effect"] = [num(v, "+.2f") for v in claims["paper effect"]]
    shown["on claimed side"] = claims["on claimed side"]
    shown["look"] = [num(v, ".0f") for v in claims["look"]]
    shown["verdict"] = claims["verdict"]
    shown["seeds to decide"] = [num(v, ".0f") for v in claims["seeds to decide"]]
    shown["seeds for 80 % power (s; σ upper)"] = [
        "—" if a == "—" else f"{a}; {b}"
        for a, b in zip(
            claims["seeds for 80 % power"].astype(str),
            claims["seeds for 80 % power (σ upper 95 %)"].astype(str),
            strict=True,
        )
    ]
    shown["note"] = [num(v) for v in claims["note"]]
    empty = [c for c in shown if shown[c].astype(str).isin(["", "—"]).all()]
    # a column no row fills says nothing, and one every row shares is said once, in the caption
    # (the CSV keeps both)
    return shown.drop(columns=empty + _shared(claims))


def _shared(claims: pd.DataFrame) -> list[str]:
    """The advice columns whose text is the same on every row of several."""
    return [
        c
        for c in ("seeds to decide", "note")
        if len(claims) > 1 and claims[c].nunique(dropna=False) == 1 and claims[c].notna().all()
    ]


def caption(claims: pd.DataFrame) -> str:
    seeds = "/".join(map(str, sorted(set(claims["seeds"]))))
    counts = claims["verdict"].value_counts()
    unjudged = (NO_VERDICT, INTERIM, OUT_OF_REGIME)
    judged = [v for v in VERDICTS if v not in unjudged and counts.get(v, 0)]
    if judged:
        text = (
            ", ".join(f"{counts[v]} {v}" for v in judged)
            + f" — over {seeds} seed(s), each judged at a look of the seed schedule"
        )
        waiting = counts.get(NO_VERDICT, 0) + counts.get(INTERIM, 0)
        text += f"; {waiting} not yet judged." if waiting else "."
    else:
        text = (
            f"No verdicts: these claims rest on {seeds} seed(s), fewer than the seed schedule's "
            "first look (or between looks), so how much training alone moves each difference "
            "is unknown. Each row gives the difference with its test-set interval, and its note "
            "the command that adds seeds."
        )
    if counts.get(OUT_OF_REGIME, 0):
        text += (
            f" {counts[OUT_OF_REGIME]} out of regime: run outside the regime their paper assumes, "
            "they say nothing about it either way."
        )
    return (
        text
        + (
            " A difference is signed so that positive is the paper's side (lower FPR95 counts as "
            "better); `claimed` is the bound its interval must clear. The interval adds the spread "
            "over seeds to the test-set noise that all seeds share (± seeds / test; `shared`: that "
            "part of one seed's test noise), at the level of its look (docs/claims.md). `smaller "
            "than claimed`: wholly below the paper's effect; `out of regime`: a precondition of "
            "the claim failed on a seed (its note says which). Statements and sources are in "
            "claims.csv, the forest plot in claims.png."
        )
        + "".join(f" Every row's {c}: {claims[c].iloc[0]}." for c in _shared(claims))
    )
