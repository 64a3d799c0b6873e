# Datasets: offline generation, checksummed downloads, conversion to 32×32 uint8 arrays.


rule generate_offline_dataset:
    output:
        f"{DATA}/datasets/{{dataset}}.npz",
    log:
        f"{DATA}/logs/generate_{{dataset}}.log",
    benchmark:
        f"{DATA}/benchmarks/generate_offline_dataset/{{dataset}}.tsv"
    wildcard_constraints:
        dataset=one_of(OFFLINE),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=per_attempt(10),
    params:
        offline=config["offline"],
    script:
        "../workflow_scripts/generate_offline_dataset.py"


# On the machine that runs Snakemake (a cluster's login node, where the network is), never as a
# cluster job; `make fetch` gets every archive before a run (README, "Running on a cluster").
rule download_archive:
    output:
        protected(f"{DATA}/raw/{{archive}}"),
    log:
        f"{DATA}/logs/download_{{archive}}.log",
    benchmark:
        f"{DATA}/benchmarks/download_archive/{{archive}}.tsv"
    wildcard_constraints:
        archive=one_of(datasets.ARCHIVES),
    localrule: True
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=per_attempt(120),
    params:
        archive=lambda w: datasets.archive_source(config, w.archive),
    script:
        "../workflow_scripts/download_archive.py"


rule convert_dataset:
    input:
        lambda w: datasets.source_files(config, w.dataset),
    output:
        f"{DATA}/datasets/{{dataset}}.npz",
    log:
        f"{DATA}/logs/convert_{{dataset}}.log",
    benchmark:
        f"{DATA}/benchmarks/convert_dataset/{{dataset}}.tsv"
    wildcard_constraints:
        dataset=f"({one_of(DOWNLOADED)})(@[a-z0-9-]+)?",
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=per_attempt(60),
    params:
        sample=lambda w: derive.converted_sample(config, w.dataset),
        seed=lookup(dpath="dataset_options/{dataset}/seed", within=config, default=0),
        folder=lambda w: datasets.source_folder(config, w.dataset),
    script:
        "../workflow_scripts/convert_dataset.py"


# The outlier pool is made even where no fine-tune of the config reads it.
TARGETS["outliers"] = [dataset_file(BENCH["outliers"])] if "outliers" in BENCH else []
