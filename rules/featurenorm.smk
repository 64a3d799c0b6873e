# FeatureNorm: NormRatio per block beside FeatureNorm's AUROC on every block, from cached features.

FEATURENORM_BLOCKS = per_model("featurenorm/{variant}/blocks.csv", method="featurenorm")
SUMMARY_TABLES[layout.FEATURENORM_BLOCKS] = (
    "FeatureNorm block selection (NormRatio vs per-block AUROC)",
    FEATURENORM_BLOCKS,
)
TARGETS["featurenorm"] = [f.replace(".csv", ".png") for f in FEATURENORM_BLOCKS]


rule analyze_featurenorm_blocks:
    input:
        detector=IN_RUN.detector("{variant}", "featurenorm"),
        id_features=IN_RUN.features("{variant}", BENCH["id_test"]),
        ood_features=expand(
            IN_RUN.features("{variant}", "{dataset}"),
            dataset=BENCH["ood"],
            allow_missing=True,
        ),
    output:
        table=f"{RUN}/featurenorm/{{variant}}/blocks.csv",
        plot=report(
            f"{RUN}/featurenorm/{{variant}}/blocks.png",
            caption="../report/featurenorm_blocks.rst",
            category="FeatureNorm",
            labels={"backbone": "{arch}", "model": "{variant}", "seed": "{seed}"},
        ),
    log:
        f"{RUN}/logs/featurenorm_blocks/{{variant}}.log",
    benchmark:
        f"{RUN}/benchmarks/analyze_featurenorm_blocks/{{variant}}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=per_attempt(10),
    params:
        ood_sets=BENCH["ood"],
        context=run_context,
        title=lambda w: f"NormRatio and FeatureNorm AUROC per block · {w.arch} · {w.variant} · seed {w.seed}",
    script:
        "../workflow_scripts/analyze_featurenorm_blocks.py"
