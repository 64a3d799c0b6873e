# Datasets: offline generation, checksummed downloads, conversion to 32×32 uint8 arrays.

rule generate_offline_dataset:
    output:
        f"{DATA}/datasets/{{dataset}}.npz",
    wildcard_constraints:
        dataset=one_of(OFFLINE),
    params:
        offline=config["offline"],
    log:
        f"{DATA}/logs/generate_{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/generate_offline_dataset.py"


rule download_archive:
    output:
        protected(f"{DATA}/raw/{{archive}}"),
    wildcard_constraints:
        archive=one_of(datasets.ARCHIVES),
    params:
        archive=archive_params,
    log:
        f"{DATA}/logs/download_{{archive}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=120,
    script:
        "../workflow_scripts/download_archive.py"


def dataset_folder(wildcards):
    return config["dataset_options"].get(wildcards.dataset, {}).get("folder")


rule convert_dataset:
    input:
        lambda w: [] if dataset_folder(w) else [f"{DATA}/raw/{a}" for a in datasets.archives_of(w.dataset)],
    output:
        f"{DATA}/datasets/{{dataset}}.npz",
    wildcard_constraints:
        dataset=f"({one_of(DOWNLOADED)})(@[a-z0-9-]+)?",
    params:
        sample=lambda w: config["dataset_options"].get(w.dataset, {}).get("sample"),
        seed=lambda w: config["dataset_options"].get(w.dataset, {}).get("seed", 0),
        folder=dataset_folder,
    log:
        f"{DATA}/logs/convert_{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../workflow_scripts/convert_dataset.py"
