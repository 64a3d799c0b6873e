# WatermarkNN: trigger-set ownership watermarks. Owner models are embedded from scratch or
# from a clean checkpoint; each owner is attacked (fine-tuning, pruning); verification opens
# the commitments and decides ownership against clean null models of other seeds.

WATERMARKNN = per_run(IN_RUN.attacks())
SUMMARY_TABLES[layout.WATERMARKNN_ATTACKS] = (
    "WatermarkNN: test and trigger accuracy per model and attack (✓ = ownership claimed)",
    WATERMARKNN,
)
TARGETS["watermarknn"] = WATERMARKNN


rule embed_watermark:
    input:
        unpack(owner_init),
        train=training_set,
        test=dataset_file(BENCH["id_test"]),
        triggers=TRIGGERS,
    output:
        model=IN_RUN.model("{owner}"),
        log_csv=IN_RUN.trainer_log("{owner}"),
        marking_key=IN_RUN.owner_key("{owner}", "marking_key.npz"),
        verification_key=IN_RUN.owner_key("{owner}", "verification_key.json"),
    log:
        f"{RUN}/logs/embed_watermark/{{owner}}.log",
    benchmark:
        f"{RUN}/benchmarks/embed_watermark/{{owner}}.tsv"
    wildcard_constraints:
        owner=constraint(OWNERS),
    priority: 1
    conda:
        "../envs/torch.yaml"
    threads: NETWORK_THREADS
    resources:
        **NETWORK,
        mem_mb=8000,
        runtime=per_attempt(24 * 60),
    params:
        spec=lambda w: derive.model_spec(config, w.arch),
        recipe=lambda w: derive.owner_recipe(config, w.arch, w.owner),
        first_epoch=lambda w: WNN["owners"][w.owner]["first_epoch"],
        per_batch=WNN.get("per_batch"),
        nonce_seed=WNN.get("nonce_seed"),
        seed=lambda w: int(w.seed),
        device=config["device"],
        state=IN_RUN.resume_state("{owner}"),
    script:
        "../workflow_scripts/embed_watermark.py"


rule train_null_model:
    input:
        train=training_set,
    output:
        model=IN_RUN.model("null{k}"),
        log_csv=IN_RUN.trainer_log("null{k}"),
    log:
        f"{RUN}/logs/train_null_model/null{{k}}.log",
    benchmark:
        f"{RUN}/benchmarks/train_null_model/null{{k}}.tsv"
    wildcard_constraints:
        k=r"\d+",
    conda:
        "../envs/torch.yaml"
    threads: NETWORK_THREADS
    resources:
        **NETWORK,
        mem_mb=8000,
        runtime=per_attempt(24 * 60),
    params:
        spec=lambda w: derive.model_spec(config, w.arch),
        recipe=lambda w: derive.derived_recipe(config, w.arch, {}),
        keep={},
        seed=lambda w: 1000 * (int(w.k) + 1) + int(w.seed),  # never the run's own seed
        device=config["device"],
        state=IN_RUN.resume_state("null{k}"),
    script:
        "../workflow_scripts/train_backbone.py"


rule attack_watermark:
    input:
        owner=IN_RUN.model("{owner}"),
        marking_key=IN_RUN.owner_key("{owner}", "marking_key.npz"),
        train=training_set,
        test=dataset_file(BENCH["id_test"]),
    output:
        model=IN_RUN.model("{owner}.{attack}"),
        log_csv=IN_RUN.attack_log("{owner}", "{attack}"),
    log:
        f"{RUN}/logs/attack_watermark/{{owner}}.{{attack}}.log",
    benchmark:
        f"{RUN}/benchmarks/attack_watermark/{{owner}}.{{attack}}.tsv"
    wildcard_constraints:
        owner=constraint(OWNERS),
        attack=constraint(ATTACKS),
    priority: 1
    conda:
        "../envs/torch.yaml"
    threads: NETWORK_THREADS
    resources:
        **NETWORK,
        mem_mb=8000,
        runtime=per_attempt(12 * 60),
    params:
        recipe=lambda w: derive.attack_recipe(config, w.arch),
        data_fraction=lookup(dpath="attacks/data_fraction", within=WNN, default=None),
        frozen=lookup(dpath="attacks/frozen", within=WNN, default=None),
        seed=lambda w: int(w.seed),
        device=config["device"],
        spec=expected_spec,
        state=IN_RUN.resume_state("{owner}.{attack}"),
    script:
        "../workflow_scripts/attack_watermark.py"


rule prune_watermark:
    input:
        owner=IN_RUN.model("{owner}"),
        marking_key=IN_RUN.owner_key("{owner}", "marking_key.npz"),
        test=dataset_file(BENCH["id_test"]),
    output:
        IN_RUN.pruning("{owner}"),
    log:
        f"{RUN}/logs/prune_watermark/{{owner}}.log",
    benchmark:
        f"{RUN}/benchmarks/prune_watermark/{{owner}}.tsv"
    wildcard_constraints:
        owner=constraint(OWNERS),
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        **NETWORK,
        mem_mb=4000,
        runtime=per_attempt(30),
    params:
        rates=WNN.get("pruning"),
        device=config["device"],
        spec=expected_spec,
    script:
        "../workflow_scripts/prune_watermark.py"


rule verify_ownership:
    input:
        networks=lambda w: list(wnn_networks(w).values()),
        null=null_models,
        marking_keys=expand(
            IN_RUN.owner_key("{owner}", "marking_key.npz"),
            owner=OWNERS,
            allow_missing=True,
        ),
        verification_keys=expand(
            IN_RUN.owner_key("{owner}", "verification_key.json"),
            owner=OWNERS,
            allow_missing=True,
        ),
        pruning=expand(
            IN_RUN.pruning("{owner}"),
            owner=OWNERS,
            allow_missing=True,
        ),
        attack_logs=expand(
            IN_RUN.attack_log("{owner}", "{attack}"),
            owner=OWNERS,
            attack=ATTACKS,
            allow_missing=True,
        ),
        test=dataset_file(BENCH["id_test"]),
    output:
        table=IN_RUN.verification(),
        threshold=IN_RUN.ownership(),
        attacks=IN_RUN.attacks(),
        plot=report(
            IN_RUN.attacks(".png"),
            caption="../report/watermarknn.rst",
            category="WatermarkNN",
            labels={"backbone": "{arch}", "seed": "{seed}"},
        ),
    log:
        f"{RUN}/logs/verify_ownership.log",
    benchmark:
        f"{RUN}/benchmarks/verify_ownership.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        **NETWORK,
        mem_mb=4000,
        runtime=per_attempt(30),
    params:
        networks=lambda w: list(wnn_networks(w)),
        owners=OWNERS,
        attacks=ATTACKS,
        rule=WNN.get("ownership"),
        context=lambda w: {"benchmark": w.bench, "arch": w.arch, "seed": int(w.seed)},
        title=lambda w: f"WatermarkNN attacks · {w.arch} · seed {w.seed}",
        device=config["device"],
        spec=expected_spec,
    script:
        "../workflow_scripts/verify_ownership.py"
