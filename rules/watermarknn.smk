# WatermarkNN: trigger-set ownership watermarks. Owner models are embedded from scratch or
# from a clean checkpoint; each owner is attacked (fine-tuning, pruning); verification opens
# the commitments and decides ownership against clean null models of other seeds.

SUMMARY_TABLES["watermarknn"] = (
    "WatermarkNN: test and trigger accuracy per model and attack (✓ = ownership claimed)",
    WATERMARKNN,
)


rule embed_watermark:
    input:
        unpack(owner_init),
        train=dataset_file(BENCH["id_train"]),
        test=dataset_file(BENCH["id_test"]),
        triggers=TRIGGERS,
    output:
        model=f"{RUN}/models/{{owner}}.pt",
        log_csv=f"{RUN}/watermarknn/{{owner}}/train_log.csv",
        marking_key=f"{RUN}/watermarknn/{{owner}}/marking_key.npz",
        verification_key=f"{RUN}/watermarknn/{{owner}}/verification_key.json",
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
        spec=lambda w: cfg.model_spec(config, w.arch),
        recipe=lambda w: cfg.owner_recipe(config, w.arch, w.owner),
        first_epoch=lambda w: WNN["owners"][w.owner]["first_epoch"],
        per_batch=WNN.get("per_batch"),
        nonce_seed=WNN.get("nonce_seed"),
        seed=lambda w: int(w.seed),
        device=config["device"],
        state=f"{RUN}/models/.resume/{{owner}}.pt",
    script:
        "../workflow_scripts/embed_watermark.py"


rule train_null_model:
    input:
        train=dataset_file(BENCH["id_train"]),
    output:
        model=f"{RUN}/models/null{{k}}.pt",
        log_csv=f"{RUN}/watermarknn/null{{k}}/train_log.csv",
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
        spec=lambda w: cfg.model_spec(config, w.arch),
        recipe=lambda w: cfg.derived_recipe(config, w.arch, {}),
        keep={},
        seed=lambda w: 1000 * (int(w.k) + 1) + int(w.seed),  # never the run's own seed
        device=config["device"],
        state=f"{RUN}/models/.resume/null{{k}}.pt",
    script:
        "../workflow_scripts/train_backbone.py"


rule attack_watermark:
    input:
        owner=f"{RUN}/models/{{owner}}.pt",
        marking_key=f"{RUN}/watermarknn/{{owner}}/marking_key.npz",
        train=dataset_file(BENCH["id_train"]),
        test=dataset_file(BENCH["id_test"]),
    output:
        model=f"{RUN}/models/{{owner}}.{{attack}}.pt",
        log_csv=f"{RUN}/watermarknn/{{owner}}/{{attack}}.csv",
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
        recipe=lambda w: cfg.attack_recipe(config, w.arch),
        data_fraction=lookup(dpath="attacks/data_fraction", within=WNN, default=None),
        frozen=lookup(dpath="attacks/frozen", within=WNN, default=None),
        seed=lambda w: int(w.seed),
        device=config["device"],
        spec=expected_spec,
        state=f"{RUN}/models/.resume/{{owner}}.{{attack}}.pt",
    script:
        "../workflow_scripts/attack_watermark.py"


rule prune_watermark:
    input:
        owner=f"{RUN}/models/{{owner}}.pt",
        marking_key=f"{RUN}/watermarknn/{{owner}}/marking_key.npz",
        test=dataset_file(BENCH["id_test"]),
    output:
        f"{RUN}/watermarknn/{{owner}}/pruning.csv",
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
            f"{RUN}/watermarknn/{{owner}}/marking_key.npz",
            owner=OWNERS,
            allow_missing=True,
        ),
        verification_keys=expand(
            f"{RUN}/watermarknn/{{owner}}/verification_key.json",
            owner=OWNERS,
            allow_missing=True,
        ),
        pruning=expand(
            f"{RUN}/watermarknn/{{owner}}/pruning.csv",
            owner=OWNERS,
            allow_missing=True,
        ),
        attack_logs=expand(
            f"{RUN}/watermarknn/{{owner}}/{{attack}}.csv",
            owner=OWNERS,
            attack=ATTACKS,
            allow_missing=True,
        ),
        test=dataset_file(BENCH["id_test"]),
    output:
        table=f"{RUN}/watermarknn/verification.csv",
        threshold=f"{RUN}/watermarknn/ownership.json",
        attacks=f"{RUN}/watermarknn/attacks.csv",
        plot=report(
            f"{RUN}/watermarknn/attacks.png",
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
