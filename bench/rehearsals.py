"""Gather every rehearsal's measured figures and full-scale estimate into one Markdown table
(the README's "Rehearsing a preset" table); run after `make rehearse-all`.

    .venv/bin/python bench/rehearsals.py     # prints the table, writes bench/results/rehearsals.md
"""

from __future__ import annotations

from pathlib import Path

from oodrepro import cost, rehearsal
from oodrepro.io import save_text

OUT = Path(__file__).parent / "results" / "rehearsals.md"


def main() -> None:
    rows = [
        "| preset | rehearsal jobs | rehearsal wall s | full-scale job-hours | training | LA-OOD "
        "fits | "
        "peak memory GB | downloads GB (recorded) | disk GB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    device = None
    for preset in sorted(Path("presets").glob("*.yaml")):
        if not (rehearsal.folder(preset) / "results" / "manifest.json").exists():
            continue
        per_stage, _, totals = cost.estimate(preset, rehearsal.folder(preset) / "config.yaml")
        hours = per_stage.set_index("stage")["estimate hours"]
        device = totals["device"]
        rows.append(
            f"| {preset.stem} | {totals['rehearsal jobs']} | {totals['wall s']:.0f} | "
            f"{totals['estimate hours']:.0f} | {hours.get('training', 0):.0f} | "
            f"{hours.get('LA-OOD fits', 0):.1f} | "
            f"{per_stage['peak MB (estimate)'].max() / 1024:.1f} | "
            f"{totals['download bytes'][0] / 1e9:.2f} | {totals['disk bytes'] / 1e9:.1f} |"
        )
    text = f"Rehearsals on {device}:\n\n" + "\n".join(rows) + "\n"
    save_text(OUT, text)
    print(text)


if __name__ == "__main__":
    main()
