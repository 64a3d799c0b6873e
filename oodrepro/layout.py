"""The results folder's layout: where each file a run leaves lies, named once.

The rules build their inputs and outputs from it, and the library reads results through it
(claims, preconditions, the cost estimate), so the two cannot drift apart. Every method also
takes Snakemake wildcards: `RunFolder("results/{bench}/{arch}/seed{seed}").model("{variant}")`
is the pattern a rule declares.
"""

from __future__ import annotations

from dataclasses import dataclass

# The per-method tables of the summary that its notes also read, by the key the method's rule
# file registers them under (`SUMMARY_TABLES` in rules/*.smk).
FEATURENORM_BLOCKS = "featurenorm_blocks"
WATERMARKNN_ATTACKS = "watermarknn"

# The workflow's jobs by the folder their benchmark records lie in (a rule's `benchmark:`;
# score_features and score_network share `score`, fit_detector and fit_network_detector
# `fit_detector`), each with the kind of work it does: how the cost estimate grows it to a full
# run (`cost.COSTS`). A new rule adds its folder here.
JOBS = {
    "download_archive": "download",
    "convert_dataset": "conversion",
    "generate_offline_dataset": "generation",
    "draw_training_set": "training sample",
    "import_pretrained_backbone": "import",
    "import_pretrained_snapshot": "import",
    "train_backbone": "backbone training",
    "train_null_model": "null model training",
    "embed_watermark": "owner embedding",
    "attack_watermark": "attack",
    "finetune_model": "fine-tune",
    "learn_watermark": "watermark learning",
    "estimate_loss_constraint": "UM level",
    "dump_features": "feature dump",
    "fit_detector": "detector fit",
    "score": "scoring",
    "search_hyperparameters": "search",
    "compute_metrics": "metrics",
    **{
        name: "analysis"
        for name in (
            "plot_training",
            "plot_finetune",
            "analyze_featurenorm_blocks",
            "analyze_laood_layers",
            "prune_watermark",
            "verify_ownership",
            "evaluate_claims",
            "summarize",
            "plot_overview",
        )
    },
}
BENCHMARKS = "benchmarks"  # below the results and the data folder: one folder per JOBS key


def manifest(results: str) -> str:
    """What a run computed, with what and on which machines (`manifest.write`)."""
    return f"{results}/manifest.json"


@dataclass(frozen=True)
class DataFolder:
    """The data folder: archives as downloaded, datasets as converted, the conversions' logs."""

    path: str

    @property
    def archives(self) -> str:
        """The folder of downloaded archives, with their lock file (`data.lock`)."""
        return f"{self.path}/raw"

    def archive(self, name: str) -> str:
        return f"{self.archives}/{name}"

    def dataset(self, name: str) -> str:
        """A dataset as 32×32 uint8 images and labels (`data.save_dataset`)."""
        return f"{self.path}/datasets/{name}.npz"

    def conversion_log(self, name: str) -> str:
        return f"{self.path}/logs/convert_{name}.log"


# The suffixes of a model's feature files of one dataset (`RunFolder.features`), one per dump:
# the plain dump (logits, penultimate, pooled blocks, FeatureNorms), the jigsawed training
# images, LA-OOD's pre-BN convs.
PLAIN, JIGSAW, CONVS = "", ".jigsaw", ".convs"

# One backbone and seed of one benchmark: every file below is inside such a folder.
RUN_FOLDER = "{results}/{bench}/{arch}/seed{seed}"


def run_folder(results: str, bench: str, arch: str, seed) -> str:
    return RUN_FOLDER.format(results=results, bench=bench, arch=arch, seed=seed)


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder: models and what was computed from each of them."""

    path: str

    def model(self, name: str) -> str:
        """A checkpoint: base, base.<snapshot>, a fine-tune, an owner, <model>+<watermark>…"""
        return f"{self.path}/models/{name}.pt"

    def training_set(self) -> str:
        """The run's own sample of the ID training set, drawn with its seed
        (`dataset_options.<id_train>.per_seed`)."""
        return f"{self.path}/training_set.npz"

    def resume_state(self, name: str) -> str:
        """The per-epoch training state that resumes `model(name)`; removed once it exists."""
        return f"{self.path}/models/.resume/{name}.pt"

    def train_log(self) -> str:
        """The base training's per-epoch log (loss, accuracy, test accuracy)."""
        return f"{self.path}/train_log.csv"

    def finetune_log(self, finetune: str) -> str:
        return f"{self.path}/finetune/{finetune}.csv"

    def watermark_log(self, variant: str) -> str:
        """The per-epoch log of learning `<model>+<watermark>`'s input pattern."""
        return f"{self.path}/watermark/{variant}.csv"

    def features(self, model: str, dataset: str, suffix: str = "") -> str:
        """A model's features of a dataset; `suffix` names another dump of it (conv outputs,
        jigsaw-shuffled images: `CONVS`, `JIGSAW`)."""
        return f"{self.path}/features/{model}/{dataset}{suffix}.npz"

    def detector(self, model: str, method: str) -> str:
        """A score's fitted state on a model's training features."""
        return f"{self.path}/detectors/{model}/{method}.npz"

    def detector_part(self, model: str, part) -> str:
        """One piece of LA-OOD's fit (`scores.laood.layers_per_job`)."""
        return f"{self.path}/detectors/{model}/laood/part{part}.npz"

    def scores(self, model: str, method: str, dataset: str) -> str:
        return f"{self.path}/scores/{model}/{method}/{dataset}.npy"

    def metrics(self, model: str, method: str) -> str:
        return f"{self.path}/metrics/{model}/{method}.csv"

    def search(self, model: str, method: str, ext: str) -> str:
        """A score's hyper-parameter search: every candidate (.csv) and the choice (.json)."""
        return f"{self.path}/search/{model}/{method}{ext}"

    def um_level(self, model: str) -> str:
        """The loss constraint UM estimated on a checkpoint."""
        return f"{self.path}/unleashing_mask/{model}.constraint.json"

    def laood_decisions(self, model: str) -> str:
        """LA-OOD's per-layer decisions on the evaluated sets."""
        return f"{self.path}/laood/{model}/decisions.npz"

    def verification(self) -> str:
        """WatermarkNN: every network's trigger and test accuracy (base, owners, attacks)."""
        return f"{self.path}/watermarknn/verification.csv"

    def ownership(self) -> str:
        """WatermarkNN: the ownership rule's threshold and what the null models reached."""
        return f"{self.path}/watermarknn/ownership.json"

    def attacks(self, suffix: str = ".csv") -> str:
        """WatermarkNN: ownership after each attack, as a table (or `.png`, a plot)."""
        return f"{self.path}/watermarknn/attacks{suffix}"

    def trainer_log(self, network: str) -> str:
        """The per-epoch log of a WatermarkNN owner's embedding or a null model's training."""
        return f"{self.path}/watermarknn/{network}/train_log.csv"

    def attack_log(self, owner: str, attack: str) -> str:
        return f"{self.path}/watermarknn/{owner}/{attack}.csv"

    def owner_key(self, owner: str, key: str) -> str:
        """An owner's secret: marking_key.npz (the triggers) or verification_key.json."""
        return f"{self.path}/watermarknn/{owner}/{key}"

    def pruning(self, owner: str) -> str:
        """Trigger and test accuracy of an owner pruned at each fraction."""
        return f"{self.path}/watermarknn/{owner}/pruning.csv"
