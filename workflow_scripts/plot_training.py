import pandas as pd

from oodrepro import io, metrics, plots, regime
from oodrepro.runtime import start_job

start_job(snakemake)
inp, p = snakemake.input, snakemake.params
level = p.get("level")
if level is None and "constraint" in inp.keys():
    level = regime.um_level(inp.constraint)
start = io.load_npz(inp.start, ["logits", "labels"]) if "start" in inp.keys() else None
io.save_figure(
    snakemake.output[0],
    plots.plot_training(
        pd.read_csv(inp.log),
        p.title,
        level=level,
        reference=None if start is None else metrics.accuracy_percent(**start),
    ),
)
