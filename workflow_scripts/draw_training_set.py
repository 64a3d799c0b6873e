from oodrepro import data
from oodrepro.runtime import start_job
from oodrepro.sampling import sample_indices

start_job(snakemake)
p = snakemake.params
images, labels = data.load_dataset(snakemake.input[0])
idx = sample_indices(len(images), p.sample, p.seed)
data.save_dataset(snakemake.output[0], images[idx], labels[idx])
