# Feature dumping: logits, penultimate and pooled block outputs. One job per model writes every
# set it is evaluated on (a job costs more to start than a pass over a test set takes); the
# training set's features are a job of their own, made only for the scores fitted on them. The
# other dumps (the training set, its jigsawed images, LA-OOD's conv outputs) are this rule with
# other files and `dump`.


rule dump_features:
    input:
        model=IN_RUN.model("{variant}"),
        datasets=[dataset_file(name) for name in [*EVALUATED, *TUNING]],
    output:
        [IN_RUN.features("{variant}", name) for name in [*EVALUATED, *TUNING]],
    log:
        f"{RUN}/logs/dump_features/{{variant}}.log",
    benchmark:
        f"{RUN}/benchmarks/dump_features/{{variant}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        **NETWORK,
        mem_mb=4000,
        runtime=per_attempt(60),
    params:
        dump="plain",
        batch_size=config["features"]["batch_size"],
        device=config["device"],
        spec=expected_spec,
    script:
        "../workflow_scripts/dump_features.py"


use rule dump_features as dump_train_features with:
    input:
        model=IN_RUN.model("{variant}"),
        datasets=lambda w: [training_set(w)],
    output:
        IN_RUN.features("{variant}", BENCH["id_train"]),
    log:
        f"{RUN}/logs/dump_features/{{variant}}.train.log",
    benchmark:
        f"{RUN}/benchmarks/dump_features/{{variant}}.train.tsv"


# FeatureNorm's NormRatio compares the training images' block norms with their jigsaws'.
use rule dump_features as dump_jigsaw_features with:
    input:
        model=IN_RUN.model("{variant}"),
        datasets=lambda w: [training_set(w)],
    output:
        IN_RUN.features("{variant}", BENCH["id_train"], JIGSAW),
    log:
        f"{RUN}/logs/dump_features/{{variant}}{JIGSAW}.log",
    benchmark:
        f"{RUN}/benchmarks/dump_features/{{variant}}{JIGSAW}.tsv"
    params:
        dump="jigsaw",
        seed=lambda w: config["scores"]["featurenorm"]["jigsaw_seed"],


# LA-OOD fits on the training set's conv outputs and scores the evaluated sets': all in one job.
use rule dump_features as dump_conv_features with:
    input:
        model=IN_RUN.model("{variant}"),
        datasets=lambda w: [
            training_set(w),
            *(dataset_file(name) for name in EVALUATED),
        ],
    output:
        [
            IN_RUN.features("{variant}", name, CONVS)
            for name in [BENCH["id_train"], *EVALUATED]
        ],
    log:
        f"{RUN}/logs/dump_features/{{variant}}{CONVS}.log",
    benchmark:
        f"{RUN}/benchmarks/dump_features/{{variant}}{CONVS}.tsv"
    resources:
        **NETWORK,
        mem_mb=8000,
        runtime=per_attempt(60),
    params:
        dump="convs",
