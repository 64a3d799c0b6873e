# Post-hoc scores, then metrics. Feature-based scores reuse the cached features; network
# scores (ODIN) run the model again. Each score's hyper-parameters arrive as params, so
# changing one reruns only that score's jobs and what depends on them.

FEATURE_SCORES = [n for n in config["scores"] if score_registry.get(n).needs == "features"]
NETWORK_SCORES = [n for n in config["scores"] if score_registry.get(n).needs == "network"]
FITTED_SCORES = [n for n in config["scores"] if score_registry.get(n).fit is not None]
NOTHING = "(?!)"  # a constraint no name matches, for an empty list of scores


def constraint(names):
    return one_of(names) if names else NOTHING


def detector_of(wildcards):
    if wildcards.method in FITTED_SCORES:
        return {"detector": RUN + f"/detectors/{wildcards.variant}/{wildcards.method}.npz"}
    return {}


rule fit_detector:
    input:
        train=RUN + f"/features/{{variant}}/{BENCH['id_train']}.npz",
    output:
        RUN + "/detectors/{variant}/{method}.npz",
    wildcard_constraints:
        method=constraint(FITTED_SCORES),
    params:
        hp=method_params,
    log:
        RUN + "/logs/fit_detector/{variant}/{method}.log",
    benchmark:
        RUN + "/benchmarks/fit_detector/{variant}/{method}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow_scripts/fit_detector.py"


rule score_features:
    input:
        unpack(detector_of),
        features=RUN + "/features/{variant}/{dataset}.npz",
    output:
        RUN + "/scores/{variant}/{method}/{dataset}.npy",
    wildcard_constraints:
        method=constraint(FEATURE_SCORES),
    params:
        hp=method_params,
    log:
        RUN + "/logs/score/{variant}/{method}/{dataset}.log",
    benchmark:
        RUN + "/benchmarks/score/{variant}/{method}/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow_scripts/score_features.py"


rule score_network:
    input:
        model=RUN + "/models/{variant}.pt",
        dataset=dataset_file("{dataset}"),
    output:
        RUN + "/scores/{variant}/{method}/{dataset}.npy",
    wildcard_constraints:
        method=constraint(NETWORK_SCORES),
    params:
        hp=method_params,
        device=config["device"],
    log:
        RUN + "/logs/score/{variant}/{method}/{dataset}.log",
    benchmark:
        RUN + "/benchmarks/score/{variant}/{method}/{dataset}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    script:
        "../workflow_scripts/score_network.py"


def score_files(wildcards):
    base = RUN.format(bench=wildcards.bench, arch=wildcards.arch, seed=wildcards.seed)
    scores_dir = f"{base}/scores/{wildcards.variant}/{wildcards.method}"
    return {
        "id_scores": f"{scores_dir}/{BENCH['id_test']}.npy",
        "ood_scores": [f"{scores_dir}/{name}.npy" for name in BENCH["ood"]],
    }


rule compute_metrics:
    input:
        unpack(score_files),
        id_features=RUN + f"/features/{{variant}}/{BENCH['id_test']}.npz",
    output:
        RUN + "/metrics/{variant}/{method}.csv",
    params:
        ood_sets=BENCH["ood"],
        groups=BENCH.get("groups", {}),
        settings=config["metrics"],
        context=lambda w: {
            "benchmark": w.bench,
            "arch": w.arch,
            "seed": int(w.seed),
            "model": w.variant,
            "method": w.method,
        },
    log:
        RUN + "/logs/metrics/{variant}/{method}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/compute_metrics.py"
