# Plots and the summary that `snakemake --report` gathers into one HTML report.


rule summarize:
    input:
        unpack(lambda w: {key: files for key, (_, files) in SUMMARY_TABLES.items()}),
        metrics=per_model("metrics/{variant}/{method}.csv"),
        ownership=[f.replace("attacks.csv", "ownership.json") for f in WATERMARKNN],
        claims=f"{RESULTS}/claims.csv",
    output:
        tidy=f"{RESULTS}/metrics.csv",
        summary=f"{RESULTS}/summary.csv",
        comparison=f"{RESULTS}/comparison.csv",
        markdown=f"{RESULTS}/summary.md",
        html=report(
            f"{RESULTS}/summary.html",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "results"},
        ),
    log:
        f"{RESULTS}/logs/summarize.log",
    benchmark:
        f"{RESULTS}/benchmarks/summarize.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=per_attempt(10),
    params:
        title=TITLE,
        banner=lookup(dpath="rehearsal/banner", within=config, default=None),
        reference=config["report"].get("reference", {}),
        watermarks={name: wm["objective"] for name, wm in config["watermarks"].items()},
        tables={key: title for key, (title, _) in SUMMARY_TABLES.items()},
        scores=list(config["scores"]),
        hyperparameters=config["scores"],
        search=SEARCH,
        groups=list(BENCH.get("groups", {})),
    script:
        "../workflow_scripts/summarize.py"
