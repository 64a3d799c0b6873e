# Feature dumping: logits, penultimate and pooled block outputs, once per (model, dataset).


rule dump_features:
    input:
        model=RUN + "/models/{variant}.pt",
        dataset=dataset_file("{dataset}"),
    output:
        RUN + "/features/{variant}/{dataset}.npz",
    params:
        batch_size=config["features"]["batch_size"],
        device=config["device"],
    log:
        RUN + "/logs/dump_features/{variant}/{dataset}.log",
    benchmark:
        RUN + "/benchmarks/dump_features/{variant}/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    script:
        "../workflow_scripts/dump_features.py"
