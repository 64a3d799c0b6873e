"""The attack table the summary prints."""

from __future__ import annotations

import pandas as pd


def attack_table(
    verification: pd.DataFrame, pruning: dict[str, pd.DataFrame], threshold: dict
) -> pd.DataFrame:
    """Test and trigger accuracy (%) per model and attack, with the ownership decision."""
    rows = []
    for r in verification.itertuples():
        embedding, _, attack_name = r.network.partition(".")
        rows.append(
            {
                "network": embedding,
                "attack": attack_name or "-",
                "test acc.": 100 * r.test_accuracy,
                "trigger acc.": 100 * r.trigger_accuracy,
                "trigger acc. (own head)": 100 * r.trigger_accuracy_own_head,
                "claimed": "✓" if r.claimed else "✗",
            }
        )
    for owner, curve in pruning.items():
        for c in curve.itertuples():
            if c.prune_rate > 0:
                rows.append(
                    {
                        "network": owner,
                        "attack": f"prune {c.prune_rate:.0%}",
                        "test acc.": 100 * c.test_accuracy,
                        "trigger acc.": 100 * c.trigger_accuracy,
                        "trigger acc. (own head)": 100 * c.trigger_accuracy,
                        "claimed": "✓" if c.trigger_accuracy >= threshold["threshold"] else "✗",
                    }
                )
    return pd.DataFrame(rows)
