# The papers' headline claims, checked: one job reads the cached scores, features and tables
# each claim names (its kind's `files`) for every backbone and seed and writes the verdicts under
# the seed schedule. The claims arrive as params, so editing one reruns this job and the summary,
# nothing upstream; adding seeds runs the new seeds' jobs and this one.

# Backbones whose seeds all import one released model: their rows say so.
SHARED_STARTS = [
    a for a in config["backbones"] if derive.shares_released_start(config, a)
]


rule evaluate_claims:
    input:
        lambda w: sorted(set(claim_checks.flat(claim_runs()))),
    output:
        table=f"{RESULTS}/claims.csv",
        plot=report(
            f"{RESULTS}/claims.png",
            caption="../report/claims.rst",
            category="Claims",
            subcategory="claims",  # before each backbone's overview
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
        runtime=per_attempt(30),
    params:
        claims=CLAIMS,
        runs=claim_runs(),
        benchmark=BENCH,
        metrics=config["metrics"],
        uncertainty=config["uncertainty"],
        watermarknn=WNN,
        shared_backbones=SHARED_STARTS,
        title=f"Claims: difference and interval at each row's level · {TITLE}",
    script:
        "../workflow_scripts/evaluate_claims.py"


TARGETS["claims"] = list(rules.evaluate_claims.output)
