# Post-hoc scores, then metrics. One job per model and score for all evaluated sets (a job costs
# more to start than to score): feature-based scores reuse the cached features, network scores
# (ODIN) run the model again. Each score's hyper-parameters arrive as params, so changing one
# reruns only that score's jobs and what depends on them.


rule fit_detector:
    input:
        unpack(fit_inputs),
        unpack(search_result),
    output:
        IN_RUN.detector("{variant}", "{method}"),
    log:
        f"{RUN}/logs/fit_detector/{{variant}}/{{method}}.log",
    benchmark:
        f"{RUN}/benchmarks/fit_detector/{{variant}}/{{method}}.tsv"
    wildcard_constraints:
        method=constraint(
            [
                n
                for n in FITTED_SCORES
                if n not in NETWORK_FITS and not (n == "laood" and LAOOD_SPLIT)
            ]
        ),
    conda:
        "../envs/analysis.yaml"
    threads: lambda w: 4 if score_registry.get(w.method).parallel_fit else 1
    resources:
        mem_mb=8000,
        runtime=per_attempt(12 * 60),
    params:
        hp=method_params,
    script:
        "../workflow_scripts/fit_detector.py"


rule fit_network_detector:
    input:
        model=IN_RUN.model("{variant}"),
        train=training_set,
        tune=dataset_file(BENCH["id_test"]),
    output:
        IN_RUN.detector("{variant}", "{method}"),
    log:
        f"{RUN}/logs/fit_detector/{{variant}}/{{method}}.log",
    benchmark:
        f"{RUN}/benchmarks/fit_detector/{{variant}}/{{method}}.tsv"
    wildcard_constraints:
        method=constraint(NETWORK_FITS),
    conda:
        "../envs/torch.yaml"
    threads: NETWORK_THREADS
    resources:
        **NETWORK,
        mem_mb=8000,
        runtime=per_attempt(6 * 60),
    params:
        hp=method_params,
        augmentation=lambda w: derive.recipe_of(config, w.arch)["augment"],
        seed=lambda w: int(w.seed),
        device=config["device"],
        spec=expected_spec,
    script:
        "../workflow_scripts/fit_network_detector.py"


rule score_features:
    input:
        unpack(detector_of),
        unpack(search_result),
        features=features_read,
    output:
        [IN_RUN.scores("{variant}", "{method}", name) for name in EVALUATED],
    log:
        f"{RUN}/logs/score/{{variant}}/{{method}}.log",
    benchmark:
        f"{RUN}/benchmarks/score/{{variant}}/{{method}}.tsv"
    wildcard_constraints:
        method=constraint(FEATURE_SCORES),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=per_attempt(30),
    params:
        hp=method_params,
    script:
        "../workflow_scripts/score_features.py"


# OpenOOD's automatic mode, where `search` asks for it: every grid combination fitted on the
# training features and scored on ID-val vs OOD-val; the best AUROC's values go to the score's
# fit and evaluation (oodrepro/search.py).
SEARCH_TABLES = [
    f
    for name in SEARCHED
    for f in per_model("search/{variant}/{method}.csv", method=name)
]
SUMMARY_TABLES["search"] = (
    "Hyper-parameter search (OpenOOD's automatic mode): validation AUROC of each combination",
    SEARCH_TABLES,
)


rule search_hyperparameters:
    input:
        unpack(search_inputs),
    output:
        table=IN_RUN.search("{variant}", "{method}", ".csv"),
        chosen=IN_RUN.search("{variant}", "{method}", ".json"),
    log:
        f"{RUN}/logs/search/{{variant}}/{{method}}.log",
    benchmark:
        f"{RUN}/benchmarks/search_hyperparameters/{{variant}}/{{method}}.tsv"
    wildcard_constraints:
        method=constraint(SEARCHED),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=per_attempt(60),
    params:
        hp=method_params,
        grid=lambda w: SEARCH["grids"][w.method],
        context=lambda w: {**run_context(w), "score": w.method},
    script:
        "../workflow_scripts/search_hyperparameters.py"


rule score_network:
    input:
        unpack(detector_of),
        model=IN_RUN.model("{variant}"),
        datasets=[dataset_file(name) for name in EVALUATED],
    output:
        [IN_RUN.scores("{variant}", "{method}", name) for name in EVALUATED],
    log:
        f"{RUN}/logs/score/{{variant}}/{{method}}.log",
    benchmark:
        f"{RUN}/benchmarks/score/{{variant}}/{{method}}.tsv"
    wildcard_constraints:
        method=constraint(NETWORK_SCORES),
    conda:
        "../envs/torch.yaml"
    threads: NETWORK_THREADS
    resources:
        **NETWORK,
        mem_mb=4000,
        runtime=per_attempt(60),
    params:
        hp=method_params,
        device=config["device"],
        spec=expected_spec,
    script:
        "../workflow_scripts/score_network.py"


# The metrics table and the score histograms of one (model, score) pair, from the same files.
rule compute_metrics:
    input:
        unpack(score_files),
        id_features=IN_RUN.features("{variant}", BENCH["id_test"]),
    output:
        table=IN_RUN.metrics("{variant}", "{method}"),
        plot=report(
            f"{RUN}/plots/{{variant}}/{{method}}.png",
            caption="../report/scores.rst",
            category="Score distributions",
            subcategory="{arch} · {variant}",
            labels={"method": "{method}", "model": "{variant}", "seed": "{seed}"},
        ),
    log:
        f"{RUN}/logs/metrics/{{variant}}/{{method}}.log",
    benchmark:
        f"{RUN}/benchmarks/compute_metrics/{{variant}}/{{method}}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=per_attempt(10),
    params:
        ood_sets=BENCH["ood"],
        groups=BENCH.get("groups", {}),
        settings=config["metrics"],
        context=lambda w: {**run_context(w), "method": w.method},
        title=lambda w: f"{w.method} · {w.arch} · {w.variant} · seed {w.seed}",
    script:
        "../workflow_scripts/compute_metrics.py"


TARGETS["scores"] = per_model("plots/{variant}/{method}.png")
