import pandas as pd

from oodrepro import data, io, plots, watermarknn
from oodrepro.runtime import start_job

start_job(snakemake)
p, out, inp = snakemake.params, snakemake.output, snakemake.input
networks = dict(zip(p.networks, inp.networks, strict=True))
keys = {
    o: (mk, vk) for o, mk, vk in zip(p.owners, inp.marking_keys, inp.verification_keys, strict=True)
}
pruning = {o: pd.read_csv(f) for o, f in zip(p.owners, inp.pruning, strict=True)}
logs = {
    f"{o}.{a}": pd.read_csv(f)
    for (o, a), f in zip(
        [(o, a) for o in p.owners for a in p.attacks], inp.attack_logs, strict=True
    )
}
table, threshold, attacks = watermarknn.verify_owners(
    networks,
    keys,
    inp.null,
    pruning,
    data.load_dataset(inp.test),
    p.rule,
    device=p.device,
    spec=p.spec,
)
io.save_csv(out.table, pd.DataFrame([p.context] * len(table)).join(table))
io.save_json(out.threshold, threshold)
io.save_csv(out.attacks, pd.DataFrame([p.context] * len(attacks)).join(attacks))
io.save_figure(out.plot, plots.plot_attacks(logs, table, threshold["threshold"], p.title))
