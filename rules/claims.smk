# The papers' headline claims, checked: one job reads the cached scores, features and tables
# each claim names (oodrepro.claims.files) for every backbone and seed and writes the verdicts.
# The claims arrive as params, so editing one reruns this job and the summary, nothing upstream.


rule evaluate_claims:
    input:
        lambda w: sorted(set(claim_checks.flat(claim_runs()))),
    output:
        table=f"{RESULTS}/claims.csv",
        plot=report(
            f"{RESULTS}/claims.png",
            caption="../report/claims.rst",
            category="Claims",
        ),
    log:
        f"{RESULTS}/logs/evaluate_claims.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_claims.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        claims=CLAIMS,
        runs=claim_runs(),
        benchmark=BENCH,
        metrics=config["metrics"],
        uncertainty=config["uncertainty"],
        watermarknn=WNN,
        title=f"Claims: difference and 95 % interval · {TITLE}",
    script:
        "../workflow_scripts/evaluate_claims.py"
