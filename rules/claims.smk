# The papers' headline claims, checked: one job reads the cached scores, features and tables
# each claim names (oodrepro.claims.files) for every backbone and seed and writes the verdicts.
# The claims arrive as params, so editing one reruns this job and the summary, nothing upstream.


def claim_runs():
    """{backbone: {seed: {claim id: the files that claim reads in that run folder}}}."""
    return {
        arch: {
            seed: {
                c["id"]: claim_checks.files(
                    c, RUN.format(bench=BENCH["name"], arch=arch, seed=seed), BENCH
                )
                for c in CLAIMS
            }
            for seed in config["seeds"]
        }
        for arch in config["backbones"]
    }


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
