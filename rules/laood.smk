# LA-OOD: the fit split into pieces of `layers_per_job` layers when the config asks for it (one
# cluster job each, sized from n and D), and each layer's own AUROC and how often it decides the
# combined score, from cached conv features; the per-layer decision values are kept for the claims.

LAOOD_LAYERS = per_model("laood/{variant}/layers.csv", method="laood")
SUMMARY_TABLES["laood_layers"] = (
    "LA-OOD layers (γ, per-layer AUROC, how often each layer decides)",
    LAOOD_LAYERS,
)
TARGETS["laood"] = [f.replace(".csv", ".png") for f in LAOOD_LAYERS]


if LAOOD_SPLIT:

    rule fit_laood_part:
        input:
            train_convs=IN_RUN.features("{variant}", BENCH["id_train"], CONVS),
        output:
            IN_RUN.detector_part("{variant}", "{part}"),
        log:
            f"{RUN}/logs/fit_detector/{{variant}}/laood.part{{part}}.log",
        benchmark:
            f"{RUN}/benchmarks/fit_detector/{{variant}}/laood.part{{part}}.tsv"
        wildcard_constraints:
            part=r"\d+",
        conda:
            "../envs/analysis.yaml"
        threads: lambda w: min(4, len(laood_part_layers(w)))
        resources:
            mem_mb=lambda w, input: laood_part_cost(w, input)[0],
            runtime=lambda w, input, attempt: laood_part_cost(w, input)[1] * attempt,
        params:
            layers=laood_part_layers,
            hp=lambda w: config["scores"]["laood"],
        script:
            "../workflow_scripts/fit_laood_part.py"

    rule gather_laood:
        input:
            lambda w: [
                in_run(w).detector_part(w.variant, i)
                for i in range(len(laood_parts(w)))
            ],
        output:
            IN_RUN.detector("{variant}", "laood"),
        log:
            f"{RUN}/logs/fit_detector/{{variant}}/laood.log",
        benchmark:
            f"{RUN}/benchmarks/fit_detector/{{variant}}/laood.tsv"
        conda:
            "../envs/analysis.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=per_attempt(10),
        script:
            "../workflow_scripts/gather_laood.py"


rule analyze_laood_layers:
    input:
        detector=IN_RUN.detector("{variant}", "laood"),
        id_features=IN_RUN.features("{variant}", BENCH["id_test"], CONVS),
        ood_features=expand(
            IN_RUN.features("{variant}", "{dataset}", CONVS),
            dataset=BENCH["ood"],
            allow_missing=True,
        ),
    output:
        table=f"{RUN}/laood/{{variant}}/layers.csv",
        decisions=IN_RUN.laood_decisions("{variant}"),
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
        runtime=per_attempt(30),
    params:
        ood_sets=BENCH["ood"],
        id_set=BENCH["id_test"],
        context=run_context,
        title=lambda w: f"LA-OOD layers · {w.arch} · {w.variant} · seed {w.seed}",
    script:
        "../workflow_scripts/analyze_laood_layers.py"
