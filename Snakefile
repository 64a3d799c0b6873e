"""oodrepro: data → backbone → features → scores → metrics → report.

All computation lives in the `oodrepro` package; rules only declare files, parameters
and resources, and workflow_scripts/ adapt the `snakemake` object to library calls.
"""

import re

from snakemake.utils import min_version

from oodrepro import config as cfg
from oodrepro import data as datasets
from oodrepro import scores as score_registry

min_version("9.0")


report: "report/workflow.rst"


configfile: "config.yaml"


cfg.validate(config)  # fills defaults; fails before any job with the offending key named

RESULTS = config["results"]
DATA = config["data"]
BENCH = config["benchmark"]
RUN = RESULTS + "/{bench}/{arch}/seed{seed}"
GPU = cfg.gpus_per_job(config)  # the `gpu` resource of every rule that runs a network


def one_of(names):
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


wildcard_constraints:
    bench=re.escape(BENCH["name"]),
    arch=one_of(config["backbones"]),
    seed=r"\d+",
    variant=r"[A-Za-z0-9_+-]+(\.[A-Za-z0-9_+-]+)*",


def dataset_file(name):
    return f"{DATA}/datasets/{name}.npz"


def method_params(wildcards):
    return config["scores"][wildcards.method]


include: "rules/data.smk"
include: "rules/backbone.smk"
include: "rules/features.smk"
include: "rules/scoring.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        [dataset_file(BENCH["outliers"])] if "outliers" in BENCH else [],
        rules.summarize.output,
        expand(
            RUN + "/plots/{variant}/{method}.png",
            bench=BENCH["name"],
            arch=list(config["backbones"]),
            seed=config["seeds"],
            variant=config["variants"],
            method=list(config["scores"]),
        ),
        expand(
            RUN + "/plots/training.png",
            bench=BENCH["name"],
            arch=list(config["backbones"]),
            seed=config["seeds"],
        ),
