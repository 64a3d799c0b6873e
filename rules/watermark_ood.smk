# Watermarking for OOD: learn an input watermark for a frozen model; the watermarked model is
# a variant `<checkpoint>+<watermark>` that every feature and scoring rule takes as it is.


rule learn_watermark:
    input:
        model=IN_RUN.model("{checkpoint}"),
        train=training_set,
    output:
        model=IN_RUN.model("{checkpoint}+{watermark}"),
        log_csv=IN_RUN.watermark_log("{checkpoint}+{watermark}"),
        plot=report(
            f"{RUN}/watermark/{{checkpoint}}+{{watermark}}.png",
            caption="../report/watermark.rst",
            category="Watermarks",
            labels={
                "backbone": "{arch}",
                "watermark": "{checkpoint}+{watermark}",
                "seed": "{seed}",
            },
        ),
    log:
        f"{RUN}/logs/learn_watermark/{{checkpoint}}+{{watermark}}.log",
    benchmark:
        f"{RUN}/benchmarks/learn_watermark/{{checkpoint}}+{{watermark}}.tsv"
    wildcard_constraints:
        checkpoint=one_of(derive.model_names(config)),
        watermark=constraint(config["watermarks"]),
    conda:
        "../envs/torch.yaml"
    threads: NETWORK_THREADS
    resources:
        **NETWORK,
        mem_mb=8000,
        runtime=per_attempt(12 * 60),
    params:
        hp=lambda w: config["watermarks"][w.watermark],
        seed=lambda w: int(w.seed),
        device=config["device"],
        spec=expected_spec,
        state=IN_RUN.resume_state("{checkpoint}+{watermark}"),
        title=lambda w: f"{w.checkpoint}+{w.watermark} · {w.arch} · seed {w.seed}",
    script:
        "../workflow_scripts/learn_watermark.py"


TARGETS["watermarks"] = [
    f
    for f in per_model("watermark/{variant}.png")
    if Path(f).stem.rpartition("+")[2] in config["watermarks"]
]
