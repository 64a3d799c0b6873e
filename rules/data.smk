# Datasets: offline generation, checksummed downloads, conversion to 32×32 uint8 arrays.

OFFLINE = [n for n, s in datasets.DATASETS.items() if s.offline is not None]
DOWNLOADED = [n for n, s in datasets.DATASETS.items() if s.offline is None]


def archive_params(wildcards):
    """Registry url and checksums; a config entry may move the url (a mirror) or replace the checksums."""
    archive = datasets.ARCHIVES[wildcards.archive]
    override = config["downloads"].get(wildcards.archive, {})
    if "md5" in override or "sha256" in override:
        sums = {"md5": override.get("md5"), "sha256": override.get("sha256")}
    else:
        sums = {"md5": archive.md5, "sha256": archive.sha256}
    return {"url": override.get("url", archive.url), **sums}


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


rule convert_dataset:
    input:
        lambda w: [f"{DATA}/raw/{a}" for a in datasets.archives_of(w.dataset)],
    output:
        f"{DATA}/datasets/{{dataset}}.npz",
    wildcard_constraints:
        dataset=f"({one_of(DOWNLOADED)})(@[a-z0-9-]+)?",
    params:
        sample=lambda w: config["dataset_options"].get(w.dataset, {}).get("sample"),
        seed=lambda w: config["dataset_options"].get(w.dataset, {}).get("seed", 0),
    log:
        f"{DATA}/logs/convert_{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../workflow_scripts/convert_dataset.py"
