# Backbone training: one job per (backbone, seed), resumable, with named extra checkpoints.


# A run's own sample of the ID training set, where it is drawn per seed (`per_seed`): every job
# of the run that reads the training set reads this one (common.smk's `training_set`).
rule draw_training_set:
    input:
        dataset_file(BENCH["id_train"]),
    output:
        IN_RUN.training_set(),
    log:
        f"{RUN}/logs/draw_training_set.log",
    benchmark:
        f"{RUN}/benchmarks/draw_training_set.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=per_attempt(10),
    params:
        sample=derive.per_seed_sample(config),
        seed=lambda w: int(w.seed),
    script:
        "../workflow_scripts/draw_training_set.py"


rule train_backbone:
    input:
        unpack(selection_set),
        train=training_set,
    output:
        **{f"kept_{name}": IN_RUN.model(f"base.{name}") for name in SNAPSHOTS},
        model=IN_RUN.model("base"),
        log_csv=IN_RUN.train_log(),
    log:
        f"{RUN}/logs/train_backbone.log",
    benchmark:
        f"{RUN}/benchmarks/train_backbone.tsv"
    wildcard_constraints:
        arch=constraint(TRAINED),
    # everything downstream waits for the base model; then WatermarkNN's chain (embed → attacks
    # → verification) is the longest, so it starts before the other jobs that are ready
    priority: 2
    conda:
        "../envs/torch.yaml"
    threads: NETWORK_THREADS
    resources:
        **NETWORK,
        mem_mb=8000,
        runtime=per_attempt(24 * 60),
    params:
        spec=lambda w: derive.model_spec(config, w.arch),
        recipe=lambda w: derive.recipe_of(config, w.arch),
        keep=lambda w: derive.kept_epochs(derive.recipe_of(config, w.arch)),
        seed=lambda w: int(w.seed),
        device=config["device"],
        state=IN_RUN.resume_state("base"),
    script:
        "../workflow_scripts/train_backbone.py"


rule import_pretrained_backbone:
    input:
        lambda w: derive.pretrained_file(config, w.arch, w.seed),
    output:
        model=IN_RUN.model("base"),
    log:
        f"{RUN}/logs/import_pretrained_backbone.log",
    benchmark:
        f"{RUN}/benchmarks/import_pretrained_backbone.tsv"
    wildcard_constraints:
        arch=constraint(PRETRAINED),
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=per_attempt(10),
    params:
        spec=lambda w: derive.model_spec(config, w.arch),
        key_format=lambda w: config["backbones"][w.arch]["pretrained"]["format"],
    script:
        "../workflow_scripts/import_pretrained_backbone.py"


# The released checkpoint of another stage (Unleashing Mask's middle-stage `best`), kept as the
# training would have kept it: models/base.<snapshot>.pt.
use rule import_pretrained_backbone as import_pretrained_snapshot with:
    input:
        lambda w: derive.pretrained_file(config, w.arch, w.seed, w.snapshot),
    output:
        model=IN_RUN.model("base.{snapshot}"),
    log:
        f"{RUN}/logs/import_pretrained_snapshot/{{snapshot}}.log",
    benchmark:
        f"{RUN}/benchmarks/import_pretrained_snapshot/{{snapshot}}.tsv"
    wildcard_constraints:
        arch=constraint(PRETRAINED),
        snapshot=constraint(SNAPSHOTS),


rule plot_training:
    input:
        log=IN_RUN.train_log(),
    output:
        report(
            f"{RUN}/plots/training.png",
            caption="../report/training.rst",
            category="Training",
            labels={"backbone": "{arch}", "seed": "{seed}"},
        ),
    log:
        f"{RUN}/logs/plot_training.log",
    benchmark:
        f"{RUN}/benchmarks/plot_training.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=per_attempt(5),
    params:
        title=lambda w: f"{w.arch}, seed {w.seed}",
    script:
        "../workflow_scripts/plot_training.py"


TARGETS["training"] = per_run(rules.plot_training.output[0], arch=TRAINED)
