"""oodrepro: data → backbone → features → scores → metrics → report.

All computation lives in the `oodrepro` package; rules only declare files, parameters
and resources, and workflow_scripts/ adapt the `snakemake` object to library calls.
"""

import re
from pathlib import Path

from snakemake.utils import min_version

from oodrepro import claims as claim_checks
from oodrepro import config as cfg
from oodrepro import derive
from oodrepro import laood, layout, manifest, runtime
from oodrepro import data as datasets
from oodrepro import scores as score_registry
from oodrepro.score_registry import FIT_INPUTS
from oodrepro.io import npz_shapes

min_version("9.0")


report: "report/workflow.rst"


# Every config file parsed strictly (a duplicated key names its line), and a complete config
# that Snakemake would merge into config.yaml (no --replace-workflow-config) refused.
cfg.check_config_files(
    "config.yaml",
    workflow.overwrite_configfiles,
    workflow.config_settings.replace_workflow_config,
)


configfile: "config.yaml"


# Fills in defaults; fails before any job, naming the offending key.
cfg.validate(config, cache_dir=".snakemake/oodrepro")
# An archive no job could get (offline, its distribution package not installed) fails here.
# An archive nothing pins, or one in the data folder that differs from its pin, too; checked by
# the process that plans the run (a cluster job trusts it).
UNAVAILABLE = datasets.unavailable(config)
if workflow.is_main_process:
    UNAVAILABLE += datasets.verify_present(config)
if UNAVAILABLE:
    raise cfg.ConfigError("\n".join(UNAVAILABLE))

# Jobs import this checkout's `oodrepro` in whatever environment runs them (a rule's conda
# env, a cluster node), without installing it there.
runtime.put_on_pythonpath(workflow.basedir)

RESULTS = config["results"]
DATA = config["data"]
BENCH = config["benchmark"]
EVALUATED = [BENCH["id_test"], *BENCH["ood"]]  # every set a model is scored on
JIGSAW, CONVS = layout.JIGSAW, layout.CONVS  # feature-file suffixes
RUN = layout.run_folder(
    RESULTS, "{bench}", "{arch}", "{seed}"
)  # a pattern of wildcards
IN_RUN = layout.RunFolder(RUN)  # the files in it (oodrepro/layout.py)
# The partition a cluster profile names for jobs that run a network (profiles/slurm); with one,
# `device: auto` means a GPU per such job, wherever this Snakemake runs.
GPU_PARTITION = (workflow.resource_settings.default_resources or {}).get(
    "gpu_partition"
)
GPU_PARTITION = GPU_PARTITION and GPU_PARTITION.raw.strip("'\"")
GPU = derive.gpus_per_job(config, cluster_gpus=bool(GPU_PARTITION))
# the resources every rule that trains or runs a network adds to its own
NETWORK = {
    "gpu": GPU,
    **({"slurm_partition": GPU_PARTITION} if GPU and GPU_PARTITION else {}),
}
# the `threads` of every rule that trains or runs a network
NETWORK_THREADS = config["network_threads"]


OFFLINE = [n for n, s in datasets.DATASETS.items() if s.offline is not None]
DOWNLOADED = [n for n, s in datasets.DATASETS.items() if s.offline is None]
FEATURE_SCORES = [
    n for n in config["scores"] if score_registry.get(n).needs == "features"
]
NETWORK_SCORES = [
    n for n in config["scores"] if score_registry.get(n).needs == "network"
]
FITTED_SCORES = [n for n in config["scores"] if score_registry.get(n).fit is not None]
NETWORK_FITS = [n for n in FITTED_SCORES if n in NETWORK_SCORES]
# OpenOOD-style hyper-parameter search (oodrepro/search.py): the scores it tunes and the
# validation sets it tunes on, dumped with the evaluated sets
SEARCH = config.get("search", {})
SEARCHED = list(SEARCH.get("grids", {}))
TUNING = [SEARCH["id_val"], SEARCH["ood_val"]] if SEARCH else []
# LA-OOD's fit as pieces of this many layers, gathered into one detector (rules/laood.smk)
LAOOD_SPLIT = lookup(dpath="scores/laood/layers_per_job", within=config, default=None)
WNN = config.get("watermarknn", {})
OWNERS = list(WNN.get("owners", {}))
ATTACKS = lookup(dpath="attacks/kinds", within=WNN, default=[])
TRIGGERS = f"{DATA}/datasets/{WNN['triggers']}.npz" if WNN else None
FINETUNES = config["finetunes"]
UM = config["unleashing_mask"]
CLAIMS = config["claims"]


include: "rules/common.smk"


wildcard_constraints:
    bench=re.escape(BENCH["name"]),
    arch=one_of(config["backbones"]),
    seed=r"\d+",
    variant=r"[A-Za-z0-9_+-]+(\.[A-Za-z0-9_+-]+)*",
    dataset=r"[A-Za-z0-9_@-]+",


include: "rules/data.smk"
include: "rules/backbone.smk"
include: "rules/features.smk"
include: "rules/scoring.smk"
include: "rules/featurenorm.smk"
include: "rules/laood.smk"
include: "rules/watermark_ood.smk"


if WNN:

    include: "rules/watermarknn.smk"


include: "rules/unleashing_mask.smk"
include: "rules/report.smk"
include: "rules/claims.smk"


# Everything a run produces, as each rule file registers it; the manifest is written after all.
FINAL = list(TARGETS.values())


onstart:
    manifest.mark_start(f"{RESULTS}/logs/run_started.txt")


rule write_manifest:
    input:
        FINAL,
    output:
        manifest=f"{RESULTS}/manifest.json",
        config=f"{RESULTS}/config.yaml",  # the validated config, defaults filled in
    log:
        f"{RESULTS}/logs/write_manifest.log",
    localrule: True
    conda:
        "envs/analysis.yaml"
    params:
        config=config,
        repo=workflow.basedir,
        started=f"{RESULTS}/logs/run_started.txt",
        job_logs=[RESULTS, f"{DATA}/logs"],  # where every job keeps its machine's facts
    script:
        "workflow_scripts/write_manifest.py"


rule all:
    default_target: True
    input:
        f"{RESULTS}/manifest.json",
