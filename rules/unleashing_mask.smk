# Unleashing Mask and outlier exposure: the loss constraint UM estimated from a clean
# checkpoint, then fine-tuned models (UM, UMAP, OE / Energy-OE / POEM / DOE ± UM, and LA-OOD's
# co-training under the detectors fitted on its start), each an ordinary checkpoint
# `models/<name>.pt` that the feature and scoring rules take as it is.


rule estimate_loss_constraint:
    input:
        model=IN_RUN.model("{checkpoint}"),
        train=training_set,
    output:
        IN_RUN.um_level("{checkpoint}"),
    log:
        f"{RUN}/logs/estimate_loss_constraint/{{checkpoint}}.log",
    benchmark:
        f"{RUN}/benchmarks/estimate_loss_constraint/{{checkpoint}}.tsv"
    wildcard_constraints:
        checkpoint=one_of(derive.model_names(config)),
    conda:
        "../envs/torch.yaml"
    threads: NETWORK_THREADS
    resources:
        **NETWORK,
        mem_mb=4000,
        runtime=per_attempt(60),
    params:
        keep=UM["keep"],
        draws=UM["draws"],
        batch_size=UM["batch_size"],
        augment=lambda w: derive.recipe_of(config, w.arch)["augment"],
        seed=lambda w: int(w.seed),
        device=config["device"],
        spec=expected_spec,
    script:
        "../workflow_scripts/estimate_loss_constraint.py"


rule finetune_model:
    input:
        unpack(finetune_inputs),
        train=training_set,
        test=dataset_file(BENCH["id_test"]),
    output:
        model=IN_RUN.model("{finetune}"),
        log_csv=IN_RUN.finetune_log("{finetune}"),
    log:
        f"{RUN}/logs/finetune_model/{{finetune}}.log",
    benchmark:
        f"{RUN}/benchmarks/finetune_model/{{finetune}}.tsv"
    wildcard_constraints:
        finetune=constraint(FINETUNES),
    conda:
        "../envs/torch.yaml"
    threads: NETWORK_THREADS
    resources:
        **NETWORK,
        mem_mb=8000,
        runtime=per_attempt(24 * 60),
    params:
        recipe=lambda w: derive.finetune_recipe(config, w.arch, w.finetune),
        flooding=lambda w: FINETUNES[w.finetune]["flooding"],
        level=UM["level"],
        beta=UM["beta"],
        mask=lambda w: FINETUNES[w.finetune].get("mask"),
        exposure=lambda w: FINETUNES[w.finetune].get("exposure"),
        cotrain=lambda w: FINETUNES[w.finetune].get("cotrain"),
        seed=lambda w: int(w.seed),
        device=config["device"],
        spec=expected_spec,
        state=IN_RUN.resume_state("{finetune}"),
    script:
        "../workflow_scripts/finetune_model.py"


rule plot_finetune:
    input:
        unpack(finetune_plot_inputs),
    output:
        report(
            f"{RUN}/plots/finetune/{{finetune}}.png",
            caption="../report/finetune.rst",
            category="Training",
            labels={"backbone": "{arch}", "model": "{finetune}", "seed": "{seed}"},
        ),
    log:
        f"{RUN}/logs/plots/finetune/{{finetune}}.log",
    benchmark:
        f"{RUN}/benchmarks/plot_finetune/{{finetune}}.tsv"
    wildcard_constraints:
        finetune=constraint(FINETUNES),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=per_attempt(5),
    params:
        title=lambda w: f"fine-tune {w.finetune} · {w.arch} · seed {w.seed}",
        level=lambda w: UM["level"] if FINETUNES[w.finetune]["flooding"] else None,
    script:
        "../workflow_scripts/plot_training.py"


TARGETS["finetunes"] = [
    f
    for finetune in config["finetunes"]
    for f in per_run(rules.plot_finetune.output[0].replace("{finetune}", finetune))
]
