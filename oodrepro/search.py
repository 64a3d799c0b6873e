"""Hyper-parameter search as OpenOOD v1.5's automatic mode does it (its `APS_mode`), an option.

The papers' defaults stay the default: a score is searched only where the config's `search.grids`
names it. For such a score every combination of its grid is fitted on the ID training features
(where the score has a fit) and scored on ID-val and OOD-val; the combination with the highest
AUROC there (ID positive; the first in grid order on a tie) is the one the score is then fitted
and evaluated with. The test sets are never seen. The trials and the choice are a table of their
own, printed in the summary (docs/openood-v15.md).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import scores
from .metrics import auroc


def combinations(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, in grid order (the last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def search(
    score: scores.Score,
    fit_inputs: list[dict],
    id_val: dict,
    ood_val: dict,
    *,
    hp: dict,
    grid: dict[str, list],
) -> pd.DataFrame:
    """One row per combination: its values, the validation AUROC (%) and whether it was chosen.
    `hp` are the config's values; the grid's replace them."""
    rows = []
    for trial in combinations(grid):
        bound = score.bind({**hp, **trial})
        state = bound.fit(*fit_inputs) if score.fit is not None else None
        s_id, s_ood = bound(id_val, state=state), bound(ood_val, state=state)
        rows.append({**trial, "val_auroc": 100 * auroc(s_id, s_ood)})
    table = pd.DataFrame(rows)
    table["chosen"] = False
    table.loc[int(np.argmax(table["val_auroc"].to_numpy())), "chosen"] = True
    return table


def chosen(table: pd.DataFrame, grid: dict[str, list]) -> dict:
    """The chosen combination of a search table (`search`'s rows follow `combinations`), with
    the grid's own values."""
    return combinations(grid)[int(np.flatnonzero(table["chosen"].to_numpy())[0])]


def as_summary_table(table: pd.DataFrame, grid: dict[str, list], context: dict) -> pd.DataFrame:
    """The search's trials as the summary prints them: the run (arch, seed, model), the score,
    each combination as one text column (scores' grids differ), its AUROC, the chosen one."""
    values = table[list(grid)].apply(lambda row: ", ".join(f"{k}={row[k]}" for k in grid), axis=1)
    return pd.DataFrame(
        {
            **{k: context[k] for k in ("arch", "seed", "model", "score")},
            "values": values,
            "val AUROC": table["val_auroc"],
            "selected": table["chosen"],
        }
    )


def hyperparameters(hp: dict, searched=None) -> dict:
    """The values a score is fitted and evaluated with: the config's, or over them the values its
    search chose (`searched`: the search's JSON file)."""
    if searched is None:
        return dict(hp)
    return {**hp, **json.loads(Path(searched).read_text())["chosen"]}
