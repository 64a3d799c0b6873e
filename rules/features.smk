# Feature dumping: logits, penultimate and pooled block outputs, once per (model, dataset).


rule dump_features:
    input:
        model=f"{RUN}/models/{{variant}}.pt",
        dataset=dataset_file("{dataset}"),
    output:
        f"{RUN}/features/{{variant}}/{{dataset}}.npz",
    log:
        f"{RUN}/logs/dump_features/{{variant}}/{{dataset}}.log",
    benchmark:
        f"{RUN}/benchmarks/dump_features/{{variant}}/{{dataset}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    params:
        batch_size=config["features"]["batch_size"],
        device=config["device"],
    script:
        "../workflow_scripts/dump_features.py"


rule dump_jigsaw_features:
    input:
        model=f"{RUN}/models/{{variant}}.pt",
        dataset=dataset_file("{dataset}"),
    output:
        f"{RUN}/features/{{variant}}/{{dataset}}.jigsaw.npz",
    log:
        f"{RUN}/logs/dump_features/{{variant}}/{{dataset}}.jigsaw.log",
    benchmark:
        f"{RUN}/benchmarks/dump_features/{{variant}}/{{dataset}}.jigsaw.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    params:
        batch_size=config["features"]["batch_size"],
        device=config["device"],
        seed=config["scores"].get("featurenorm", {}).get("jigsaw_seed", 0),
    script:
        "../workflow_scripts/dump_jigsaw_features.py"


rule dump_conv_features:
    input:
        model=f"{RUN}/models/{{variant}}.pt",
        dataset=dataset_file("{dataset}"),
    output:
        f"{RUN}/features/{{variant}}/{{dataset}}.convs.npz",
    log:
        f"{RUN}/logs/dump_features/{{variant}}/{{dataset}}.convs.log",
    benchmark:
        f"{RUN}/benchmarks/dump_features/{{variant}}/{{dataset}}.convs.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=GPU,
    params:
        batch_size=config["features"]["batch_size"],
        device=config["device"],
    script:
        "../workflow_scripts/dump_conv_features.py"
