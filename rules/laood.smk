# LA-OOD: each layer's own AUROC and how often it decides the combined score, from cached conv features.


rule analyze_laood_layers:
    input:
        detector=f"{RUN}/detectors/{{variant}}/laood.npz",
        id_features=f"{RUN}/features/{{variant}}/{BENCH['id_test']}.convs.npz",
        ood_features=expand(
            f"{RUN}/features/{{variant}}/{{dataset}}.convs.npz",
            dataset=BENCH["ood"],
            allow_missing=True,
        ),
    output:
        table=f"{RUN}/laood/{{variant}}/layers.csv",
        plot=report(
            f"{RUN}/laood/{{variant}}/layers.png",
            caption="../report/laood_layers.rst",
            category="LA-OOD",
            labels={"backbone": "{arch}", "model": "{variant}", "seed": "{seed}"},
        ),
    log:
        f"{RUN}/logs/laood_layers/{{variant}}.log",
    benchmark:
        f"{RUN}/benchmarks/analyze_laood_layers/{{variant}}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        ood_sets=BENCH["ood"],
        context=run_context,
        title=lambda w: f"LA-OOD layers · {w.arch} · {w.variant} · seed {w.seed}",
    script:
        "../workflow_scripts/analyze_laood_layers.py"
