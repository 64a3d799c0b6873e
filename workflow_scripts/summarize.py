import json
from pathlib import Path

import pandas as pd

from oodrepro import io, report
from oodrepro.runtime import start_job

start_job(snakemake.log[0], snakemake.threads)
out, p = snakemake.output, snakemake.params
tidy = pd.concat([pd.read_csv(f) for f in snakemake.input.metrics], ignore_index=True)
analyses = {
    "FeatureNorm block selection (NormRatio vs per-block AUROC)": [
        pd.read_csv(f) for f in snakemake.input.featurenorm_blocks
    ],
    "LA-OOD layers (γ, per-layer AUROC, how often each layer decides)": [
        pd.read_csv(f) for f in snakemake.input.laood_layers
    ],
}
summary = report.summarize(tidy)
comparison = report.comparison_table(summary, p.reference)
analyses["WatermarkNN: test and trigger accuracy per model and attack (✓ = ownership claimed)"] = [
    pd.read_csv(f) for f in snakemake.input.watermarknn
]
analyses["Watermarking for OOD: each watermarked model beside its unwatermarked checkpoint"] = [
    report.watermark_effect(summary, p.watermarks)
]
ownership = [
    (pd.read_csv(t).iloc[0].to_dict(), json.loads(Path(o).read_text()))
    for t, o in zip(snakemake.input.watermarknn, snakemake.input.ownership, strict=True)
]
claims = pd.read_csv(snakemake.input.claims)
notes = report.notes(
    tidy, summary, analyses["FeatureNorm block selection (NormRatio vs per-block AUROC)"], ownership
)
io.save_csv(out.tidy, tidy)
io.save_csv(out.summary, summary)
io.save_csv(out.comparison, comparison)
io.save_text(
    out.markdown,
    report.markdown_summary(summary, comparison, p.title, analyses, p.banner, notes, claims),
)
io.save_text(
    out.html, report.html_summary(summary, comparison, p.title, analyses, p.banner, notes, claims)
)
