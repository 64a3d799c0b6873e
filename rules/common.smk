# Helpers shared by the rules: file names, per-job parameters and wildcard constraints.

# Names from the config that several rule files read.
SNAPSHOTS = derive.snapshot_names(config)  # the base run's extra checkpoints
PRETRAINED = [name for name, b in config["backbones"].items() if "pretrained" in b]
TRAINED = [name for name in config["backbones"] if name not in PRETRAINED]
TITLE = config["report"]["title"]
REFERENCE_ROWS = config["report"].get("reference", {}).get("rows", [])
# The per-model tables a method adds to the summary, one section each, in include order:
# key → (section title, the CSV files; each has the columns arch and seed, then the method's own).
SUMMARY_TABLES = {}
# The files each rule file adds to a run, by its name; the manifest (and so `all`) waits for them.
TARGETS = {}


def per_attempt(minutes):
    """A rule's time limit, longer each time the job is submitted again (the profile's
    `retries`): a job killed at its limit comes back with twice, then three times the time, and
    resumes where it stopped."""
    return lambda wildcards, attempt: minutes * attempt


def one_of(names):
    """A regex matching exactly these names (longest first, so no name matches a prefix)."""
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


def constraint(names):
    """one_of(names), or a regex that matches nothing when the list is empty."""
    return one_of(names) if names else "(?!)"


def dataset_file(name):
    return f"{DATA}/datasets/{name}.npz"


def training_set(wildcards):
    """The ID training images a run trains and fits on: its own seeded sample
    (`derive.per_seed_sample`), else the data folder's set."""
    if derive.per_seed_sample(config):
        return in_run(wildcards).training_set()
    return dataset_file(BENCH["id_train"])


def in_run(wildcards):
    """The files of one run folder (one backbone, one seed), wildcards filled in."""
    return layout.RunFolder(
        layout.run_folder(RESULTS, wildcards.bench, wildcards.arch, wildcards.seed)
    )


def run_context(wildcards):
    """The identifying columns of every table row a run produces."""
    return {
        "benchmark": wildcards.bench,
        "arch": wildcards.arch,
        "seed": int(wildcards.seed),
        "model": wildcards.variant,
    }


def per_run(pattern, arch=None):
    """`pattern` (with the wildcards of RUN) for every backbone (or those in `arch`) and seed."""
    return expand(
        pattern,
        bench=BENCH["name"],
        arch=list(config["backbones"]) if arch is None else arch,
        seed=config["seeds"],
    )


def per_model(pattern, method=None):
    """`pattern` (below a run folder, with {variant} and optionally {method}) for every backbone
    and seed, and every (variant, score) pair the config computes (see `variant_scores`);
    `method` keeps the variants scored by that one score."""
    pairs = [
        (v, m)
        for v in config["variants"]
        for m in derive.scores_of(config, v)
        if method in (None, m)
    ]
    if "{method}" not in pattern:
        pairs = [(v, "") for v in dict.fromkeys(v for v, _ in pairs)]
    return [
        f
        for variant, name in pairs
        for f in expand(
            f"{RUN}/{pattern}",
            bench=BENCH["name"],
            arch=list(config["backbones"]),
            seed=config["seeds"],
            variant=variant,
            method=name,
        )
    ]


def expected_spec(wildcards):
    """The model spec every checkpoint a rule reads must carry (checked when it is loaded)."""
    return derive.variant_spec(
        config, wildcards.arch, getattr(wildcards, "variant", "base")
    )


def method_params(wildcards):
    return config["scores"][wildcards.method]


def detector_of(wildcards):
    """The fitted state a score reads, if it has a fit step."""
    if wildcards.method in FITTED_SCORES:
        return {
            "detector": in_run(wildcards).detector(wildcards.variant, wildcards.method)
        }
    return {}


def fit_inputs(wildcards):
    """The ID-training feature files a score's fit reads (plain and/or jigsawed)."""
    return {
        name: in_run(wildcards).features(
            wildcards.variant, BENCH["id_train"], FIT_INPUTS[name]
        )
        for name in score_registry.get(wildcards.method).fit_inputs
    }


def search_inputs(wildcards):
    """What a score's search reads: its fit's training features (if it has a fit), and the
    validation sets' features."""
    fitted = fit_inputs(wildcards) if wildcards.method in FITTED_SCORES else {}
    return {
        **fitted,
        **{
            key: in_run(wildcards).features(wildcards.variant, SEARCH[key])
            for key in ("id_val", "ood_val")
        },
    }


def search_result(wildcards):
    """The values a search chose for this score, where the config searches it."""
    if wildcards.method in SEARCHED:
        return {
            "search": in_run(wildcards).search(
                wildcards.variant, wildcards.method, ".json"
            )
        }
    return {}


def score_files(wildcards):
    """One score's files for the ID test set and for every OOD set."""
    run, variant, method = in_run(wildcards), wildcards.variant, wildcards.method
    return {
        "id_scores": run.scores(variant, method, BENCH["id_test"]),
        "ood_scores": [run.scores(variant, method, name) for name in BENCH["ood"]],
    }


def features_read(wildcards):
    """The feature files a score reads (plain, or LA-OOD's conv outputs): ID test, then each OOD set."""
    suffix = score_registry.get(wildcards.method).reads
    return [
        in_run(wildcards).features(wildcards.variant, name, suffix)
        for name in EVALUATED
    ]


def selection_set(wildcards):
    """The ID test set, for a recipe that keeps the best-on-test epoch."""
    if derive.recipe_of(config, wildcards.arch)["checkpoint"] == "best_test":
        return {"test": dataset_file(BENCH["id_test"])}
    return {}


def owner_init(wildcards):
    """The clean checkpoint an owner continues, if it does not start from scratch."""
    source = WNN["owners"][wildcards.owner]["from"]
    return {} if source == "scratch" else {"init": in_run(wildcards).model(source)}


def wnn_networks(wildcards):
    """Every network verified: the clean base model, each owner and each attacked owner."""
    names = ["base", *OWNERS, *(f"{o}.{a}" for o in OWNERS for a in ATTACKS)]
    return {name: in_run(wildcards).model(name) for name in names}


def null_models(wildcards):
    return [in_run(wildcards).model(f"null{k}") for k in range(WNN["null_models"])]


def finetune_inputs(wildcards):
    """The start checkpoint, the UM level when it is estimated, the outliers for exposure and
    the LA-OOD detectors for co-training."""
    ft = FINETUNES[wildcards.finetune]
    run = in_run(wildcards)
    inputs = {"init": run.model(ft["from"])}
    if ft["flooding"] and UM["level"] is None:
        inputs["constraint"] = run.um_level(ft["from"])
    if "exposure" in ft:
        inputs["outliers"] = dataset_file(BENCH["outliers"])
    if "cotrain" in ft:
        inputs["detector"] = run.detector(ft["from"], "laood")
    return inputs


def finetune_plot_inputs(wildcards):
    """The fine-tune's log, the UM level it floods at when estimated, and the ID test features of
    its start model (whose test accuracy the plot draws as a reference)."""
    inputs = finetune_inputs(wildcards)
    ft, run = FINETUNES[wildcards.finetune], in_run(wildcards)
    return {
        "log": run.finetune_log(wildcards.finetune),
        "start": run.features(ft["from"], BENCH["id_test"]),
        **{k: v for k, v in inputs.items() if k == "constraint"},
    }


def laood_parts(wildcards):
    """The layer indices of each piece of the backbone's LA-OOD fit."""
    spec = derive.model_spec(config, wildcards.arch)
    count = len(cfg.architecture_names(spec, ".snakemake/oodrepro")["laood_layers"])
    return [
        list(range(i, min(i + LAOOD_SPLIT, count)))
        for i in range(0, count, LAOOD_SPLIT)
    ]


def laood_part_layers(wildcards):
    return laood_parts(wildcards)[int(wildcards.part)]


def laood_part_cost(wildcards, input):
    """(memory MB, runtime minutes) of a piece, from the n × D of its layers' training vectors."""
    shapes = npz_shapes(input.train_convs)
    cap = config["scores"]["laood"].get("max_fit")
    sizes = [shapes[f"layer_{j}"] for j in laood_part_layers(wildcards)]
    fit = [(min(n, cap) if cap else n, d) for n, d in sizes]
    memory = max(laood.layer_memory_mb(n, d) for n, d in fit)
    minutes = sum(laood.layer_seconds(n, d) for n, d in fit) / 60
    return memory, max(10, round(2 * minutes + 5))


def claim_runs():
    """{backbone: {seed: {claim id: the files that claim reads in that run folder}}}."""
    return {
        arch: {
            seed: {
                c["id"]: claim_checks.files(
                    c,
                    RUN.format(bench=BENCH["name"], arch=arch, seed=seed),
                    BENCH,
                    config,
                )
                for c in CLAIMS
            }
            for seed in config["seeds"]
        }
        for arch in config["backbones"]
    }
