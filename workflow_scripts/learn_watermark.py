from oodrepro import data, io, models, plots, watermark_ood
from oodrepro.runtime import start_job

start_job(snakemake)
p, out = snakemake.params, snakemake.output
images, labels = data.load_dataset(snakemake.input.train)
w = watermark_ood.learn_and_save(
    snakemake.input.model,
    out.model,
    images,
    labels,
    p.hp,
    p.state,
    out.log_csv,
    seed=p.seed,
    device=p.device,
    spec=p.spec,
)
io.save_figure(out.plot, plots.plot_watermark(w, models.load_model(out.model, spec=None), p.title))
