# Plots and the summary that `snakemake --report` gathers into one HTML report.


rule summarize:
    input:
        unpack(lambda w: {key: files for key, (_, files) in SUMMARY_TABLES.items()}),
        metrics=per_model("metrics/{variant}/{method}.csv"),
        ownership=per_run(IN_RUN.ownership()) if WNN else [],
        claims=f"{RESULTS}/claims.csv",
    output:
        # comparison.csv only where the config stores the paper's numbers
        **({"comparison": f"{RESULTS}/comparison.csv"} if REFERENCE_ROWS else {}),
        tidy=f"{RESULTS}/metrics.csv",
        summary=f"{RESULTS}/summary.csv",
        openood=directory(f"{RESULTS}/openood"),
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
        run={
            "benchmark": BENCH,
            "backbones": list(config["backbones"]),
            "seeds": config["seeds"],
            "models": config["variants"],
            "paper_data": config["report"]["paper_data"],
        },
        overviews={arch: f"overview/{arch}.png" for arch in config["backbones"]},
    script:
        "../workflow_scripts/summarize.py"


rule plot_overview:
    input:
        rules.summarize.input.metrics,  # not the summary's table: a claim edit redraws nothing
    output:
        report(
            f"{RESULTS}/overview/{{arch}}.png",  # the summary links it by this path
            caption="../report/overview.rst",
            category="Claims",  # the report opens with the claims, then this
            subcategory="overview",
            labels={"backbone": "{arch}"},
        ),
    log:
        f"{RESULTS}/logs/plot_overview/{{arch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_overview/{{arch}}.tsv"
    wildcard_constraints:
        arch=one_of(list(config["backbones"])),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=per_attempt(10),
    params:
        sets=[*BENCH["ood"], *BENCH.get("groups", {}), "mean"],
        title=lambda w: f"{BENCH['name']} · {w.arch} · {len(config['seeds'])} seed(s)",
    script:
        "../workflow_scripts/plot_overview.py"


TARGETS["report"] = [
    *rules.summarize.output,
    *expand(rules.plot_overview.output[0], arch=list(config["backbones"])),
]
