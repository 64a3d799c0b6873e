from oodrepro import io, laood
from oodrepro.runtime import start_job

start_job(snakemake)
io.save_npz(snakemake.output[0], **laood.merge_arrays([io.load_npz(f) for f in snakemake.input]))
