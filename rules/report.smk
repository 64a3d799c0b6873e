# Plots and the summary that `snakemake --report` gathers into one HTML report.

TITLE = config["report"]["title"]


rule plot_scores:
    input:
        unpack(score_files),
    output:
        report(
            RUN + "/plots/{variant}/{method}.png",
            caption="../report/scores.rst",
            category="Score distributions",
            subcategory="{arch} · {variant}",
            labels={"method": "{method}", "model": "{variant}", "seed": "{seed}"},
        ),
    params:
        ood_sets=BENCH["ood"],
        title=lambda w: f"{w.method} · {w.arch} · {w.variant} · seed {w.seed}",
    log:
        RUN + "/logs/plots/{variant}/{method}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/plot_scores.py"


rule summarize:
    input:
        expand(
            RUN + "/metrics/{variant}/{method}.csv",
            bench=BENCH["name"],
            arch=list(config["backbones"]),
            seed=config["seeds"],
            variant=config["variants"],
            method=list(config["scores"]),
        ),
    output:
        tidy=RESULTS + "/metrics.csv",
        summary=RESULTS + "/summary.csv",
        comparison=RESULTS + "/comparison.csv",
        markdown=RESULTS + "/summary.md",
        html=report(
            RESULTS + "/summary.html",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "results"},
        ),
    params:
        title=TITLE,
        reference=config["report"].get("reference", {}),
    log:
        RESULTS + "/logs/summarize.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/summarize.py"
