"""WatermarkNN: trigger mixing, commitments, the ownership threshold, attacks' head swap,
pruning, and the original trigger set's label order and centre crop."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from oodrepro import augmentation, data, models, training, watermarknn
from oodrepro.data import offline
from oodrepro.training import Batch

pytestmark = pytest.mark.fits  # trains or fits, then asserts: CI runs it under two roundings

SPEC = {"arch": "resnet18", "num_classes": 4, "width": 0.0625, "normalization": "half"}
RECIPE = {
    "epochs": 2,
    "batch_size": 8,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": {"kind": "constant"},
    "augment": {"crop_padding": 2, "flip": False},
}


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), rng.integers(0, 4, 32)


@pytest.fixture
def triggers():
    images, labels = offline.abstract_triggers(10, seed=3, classes=4)
    return images, labels


class Recorder(torch.nn.Module):
    """Stands in for a model: remembers every batch it sees, returns zero logits."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return torch.zeros(len(x), 4) + self.w


def test_every_batch_carries_per_batch_triggers_and_an_epoch_cycles_the_set(triggers):
    mixer = watermarknn.TriggerMixer(*triggers, per_batch=2, device="cpu")
    mixer.epoch_start(0, torch.Generator().manual_seed(0))
    model, x, y = Recorder(), torch.rand(5, 3, 32, 32), torch.zeros(5, dtype=torch.long)
    used = []
    for b in range(5):  # 10 triggers in batches of 2: 5 training batches see each trigger once
        _, logits = mixer.loss(model, Batch(x, y, b, None))
        seen = model.seen[-1]
        assert seen.shape[0] == 7 and logits.shape[0] == 5  # ID accuracy reads the ID part only
        assert torch.equal(seen[:5], x)
        t = mixer.batch(b)
        assert torch.equal(seen[5:], mixer.x[t])  # un-augmented trigger images, as stored
        used += t.tolist()
    assert sorted(used) == list(range(10))
    assert torch.equal(mixer.batch(5), mixer.batch(0))  # (o + b) mod 5


def test_the_joint_loss_is_one_mean_over_id_and_trigger_images(triggers):
    mixer = watermarknn.TriggerMixer(*triggers, per_batch=2, device="cpu")
    mixer.epoch_start(0, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = models.build(**SPEC)
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 4, (6,))
    loss, _ = mixer.loss(model, Batch(x, y, 0, None))
    t = mixer.batch(0)
    expected = torch.nn.functional.cross_entropy(
        model(torch.cat([x, mixer.x[t]])), torch.cat([y, mixer.y[t]])
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_shuffle_and_offset_change_per_epoch_and_repeat_per_seed(triggers):
    a = watermarknn.TriggerMixer(*triggers, per_batch=2, device="cpu")
    orders = []
    for epoch in (0, 1, 0):
        a.epoch_start(epoch, augmentation.epoch_generator(7, epoch))
        orders.append([a.batch(b).tolist() for b in range(5)])
    assert orders[0] == orders[2] and orders[0] != orders[1]


def test_commitments_open_and_refuse_any_tampering(triggers):
    marking, verification = watermarknn.make_keys(*triggers, nonce_seed=5)
    watermarknn.open_commitments(marking, verification)  # the honest key opens
    assert len(set(verification["images"])) == 10 and all(
        len(c) == 64 for c in verification["labels"]
    )

    pixel = {**marking, "images": marking["images"].copy()}
    pixel["images"][4, 0, 0, 0] ^= 1
    label = {**marking, "labels": marking["labels"].copy()}
    label["labels"][7] = (label["labels"][7] + 1) % 4
    nonce = {**marking, "label_nonces": marking["label_nonces"].copy()}
    nonce["label_nonces"][2, 0] ^= 1
    swapped = json.loads(json.dumps(verification))
    swapped["images"][0], swapped["images"][1] = swapped["images"][1], swapped["images"][0]
    for bad_mk, bad_vk, named in [
        (pixel, verification, r"images \[4\], labels \[\]"),
        (label, verification, r"images \[\], labels \[7\]"),
        (nonce, verification, r"images \[\], labels \[2\]"),
        (marking, swapped, r"images \[0, 1\], labels \[\]"),
    ]:
        with pytest.raises(watermarknn.VerificationError, match=named):
            watermarknn.open_commitments(bad_mk, bad_vk)
    short = {k: v[:9] for k, v in marking.items()}
    with pytest.raises(watermarknn.VerificationError, match="commits to 10"):
        watermarknn.open_commitments(short, verification)


def test_nonces_hide_the_payload_and_seeded_keys_repeat(triggers):
    a = watermarknn.make_keys(*triggers, nonce_seed=1)[1]
    b = watermarknn.make_keys(*triggers, nonce_seed=2)[1]
    fresh = watermarknn.make_keys(*triggers, nonce_seed=None)[1]
    assert a == watermarknn.make_keys(*triggers, nonce_seed=1)[1]
    assert not set(a["labels"]) & set(b["labels"]) and not set(a["labels"]) & set(fresh["labels"])


def test_threshold_sits_above_every_null_model_with_bounded_false_claims():
    null = [0.09, 0.12, 0.08, 0.14]
    t = watermarknn.ownership_threshold(null, 100, {"rule": "null-models", "alpha": 1e-3})
    assert t["threshold"] > max(null) and t["false_claim_probability"] <= 1e-3
    assert t["chance_rate"] > np.mean(
        null
    )  # an upper bound on the chance rate, not the point estimate
    looser = watermarknn.ownership_threshold(null, 100, {"rule": "null-models", "alpha": 0.05})
    assert looser["threshold"] <= t["threshold"]
    fixed = watermarknn.ownership_threshold(null, 100, {"rule": "fixed", "min_accuracy": 0.5})
    assert fixed["threshold"] == 0.5 and fixed["false_claim_probability"] < 1e-9


def owner_and_clean(tmp_path, toy, triggers):
    owner = watermarknn.embed(
        SPEC,
        *toy,
        triggers,
        {**RECIPE, "epochs": 6},
        per_batch=2,
        out=tmp_path / "owner.pt",
        state_path=tmp_path / "s.pt",
        log_csv=tmp_path / "log.csv",
        marking_out=tmp_path / "mk.npz",
        verification_out=tmp_path / "vk.json",
        seed=0,
        device="cpu",
        progress=False,
    )
    clean = training.train_backbone(
        SPEC,
        *toy,
        RECIPE,
        tmp_path / "clean.pt",
        tmp_path / "s2.pt",
        tmp_path / "log2.csv",
        seed=1,
        device="cpu",
        progress=False,
    )
    return owner, clean


def test_embedding_logs_trigger_accuracy_and_a_clean_model_is_not_claimed(
    tmp_path, toy, triggers, monkeypatch
):
    import pandas as pd

    owner_and_clean(tmp_path, toy, triggers)
    log = pd.read_csv(tmp_path / "log.csv")
    assert list(log["epoch"]) == list(range(1, 7)) and log["trigger_accuracy"].between(0, 1).all()
    nulls = []
    for k in range(3):
        training.train_backbone(
            SPEC,
            *toy,
            RECIPE,
            tmp_path / f"null{k}.pt",
            tmp_path / f"sn{k}.pt",
            tmp_path / f"ln{k}.csv",
            seed=100 + k,
            device="cpu",
            progress=False,
        )
        nulls.append(str(tmp_path / f"null{k}.pt"))
    table, threshold = watermarknn.verify(
        {"clean": tmp_path / "clean.pt", "owner": tmp_path / "owner.pt"},
        tmp_path / "mk.npz",
        tmp_path / "vk.json",
        nulls,
        toy,
        {"rule": "null-models", "alpha": 1e-3},
        device="cpu",
        spec=SPEC,
    )
    rows = table.set_index("network")
    assert not rows.loc["clean", "claimed"]
    assert rows.loc["clean", "trigger_accuracy"] < threshold["threshold"]
    assert threshold["null_models"] == 3 and len(threshold["null_accuracies"]) == 3

    loaded, load = [], models.load_model
    monkeypatch.setattr(
        models,
        "load_model",
        lambda path, device="cpu", spec=None: (
            loaded.append(str(path)) or load(path, device, spec=spec)
        ),
    )
    key = (tmp_path / "mk.npz", tmp_path / "vk.json")
    both, _, _ = watermarknn.verify_owners(
        {"owner": tmp_path / "owner.pt", "twin": tmp_path / "owner.pt"},
        {"owner": key, "twin": key},
        nulls,
        {},
        toy,
        {"rule": "null-models", "alpha": 1e-3},
        device="cpu",
        spec=SPEC,
    )
    assert list(both["network"]) == ["owner", "twin"] and both["claimed"].nunique() == 1
    assert loaded == nulls  # two owners, one trigger set: each null model is queried once

    marking = dict(np.load(tmp_path / "mk.npz"))
    marking["labels"][0] = (marking["labels"][0] + 1) % 4
    np.savez(tmp_path / "mk.npz", **marking)
    with pytest.raises(watermarknn.VerificationError):
        watermarknn.verify(
            {"owner": tmp_path / "owner.pt"},
            tmp_path / "mk.npz",
            tmp_path / "vk.json",
            nulls,
            toy,
            {"rule": "null-models", "alpha": 1e-3},
            device="cpu",
            spec=SPEC,
        )


@pytest.mark.parametrize("kind", ["ftll", "rtll", "rtal"])
def test_attacks_train_what_they_say_and_keep_the_owners_head(tmp_path, toy, triggers, kind):
    owner_and_clean(tmp_path, toy, triggers)
    before = models.load_model(tmp_path / "owner.pt", spec=SPEC).state_dict()
    watermarknn.attack(
        tmp_path / "owner.pt",
        kind,
        *toy,
        recipe=RECIPE,
        out=tmp_path / "att.pt",
        state_path=tmp_path / "sa.pt",
        log_csv=tmp_path / "att.csv",
        triggers=triggers,
        test=toy,
        seed=0,
        device="cpu",
        progress=False,
        spec=SPEC,
    )
    after_ckpt = torch.load(tmp_path / "att.pt", weights_only=True)
    after = after_ckpt["state_dict"]
    convs = [k for k in before if k.endswith("conv1.weight")]
    changed = [k for k in convs if not torch.equal(before[k], after[k])]
    assert (changed == []) if kind.endswith("ll") else (len(changed) == len(convs))
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    bn = "stem.1.running_mean"  # frozen layers stay in train mode: BatchNorm statistics drift
    assert not torch.equal(before[bn], after[bn])
    if kind.startswith("rt"):
        head = after_ckpt["original_head"]
        assert torch.equal(head["weight"], before["fc.weight"]) and torch.equal(
            head["bias"], before["fc.bias"]
        )
        model = models.load_model(tmp_path / "att.pt", spec=SPEC)
        with torch.no_grad():
            feats = model(
                torch.from_numpy(triggers[0]).permute(0, 3, 1, 2).float() / 255, return_blocks=True
            )
            expected = (
                (feats.penultimate @ before["fc.weight"].T + before["fc.bias"]).argmax(1).numpy()
            )
        acc = watermarknn.trigger_accuracy(model, *triggers, head)
        assert acc == pytest.approx((expected == triggers[1]).mean())
    else:
        assert "original_head" not in after_ckpt
    import pandas as pd

    log = pd.read_csv(tmp_path / "att.csv")
    assert {"test_accuracy", "trigger_accuracy", "trigger_accuracy_own_head"} <= set(log.columns)
    assert (log["trigger_accuracy"] == log["trigger_accuracy_own_head"]).all() == (kind == "ftll")


def test_frozen_eval_keeps_batchnorm_statistics(tmp_path, toy, triggers):
    owner_and_clean(tmp_path, toy, triggers)
    before = models.load_model(tmp_path / "owner.pt", spec=SPEC).state_dict()
    watermarknn.attack(
        tmp_path / "owner.pt",
        "ftll",
        *toy,
        recipe=RECIPE,
        out=tmp_path / "att.pt",
        state_path=tmp_path / "sa.pt",
        log_csv=tmp_path / "att.csv",
        triggers=triggers,
        test=toy,
        frozen="eval",
        seed=0,
        device="cpu",
        progress=False,
        spec=SPEC,
    )
    after = torch.load(tmp_path / "att.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("fc."))


def test_pruning_zeroes_the_requested_fraction_per_layer():
    torch.manual_seed(0)
    model = watermarknn.prune(models.build(**SPEC), 0.3)
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            w = module.weight
            assert (w == 0).sum().item() == round(0.3 * w.numel())


def _jpeg(array):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_original_trigger_set_labels_follow_string_order_and_crop_like_torchvision(tmp_path):
    from PIL import Image
    from torchvision.transforms import CenterCrop

    rng = np.random.default_rng(0)
    n = 12
    sizes = {
        i: (int(rng.integers(33, 60)), int(rng.integers(33, 60))) for i in range(1, n + 1)
    }  # odd margins too
    pics = {i: rng.integers(0, 256, (*sizes[i], 3), dtype=np.uint8) for i in range(1, n + 1)}
    string_order = sorted(f"{i}.jpg" for i in range(1, n + 1))  # 1, 10, 11, 12, 2, 3, ...
    label_of = {name: k % 10 for k, name in enumerate(string_order)}
    archive = tmp_path / "WatermarkNN-448bf51.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(
            "WatermarkNN-448bf51/data/trigger_set/labels-cifar.txt",
            "\n".join(f"{label_of[name]:.3e}" for name in string_order) + "\n",
        )
        for i, img in pics.items():  # PNG bytes under .jpg names keep the test lossless
            z.writestr(f"WatermarkNN-448bf51/data/trigger_set/pics/{i}.jpg", _jpeg(img))
    out = tmp_path / "t.npz"
    data.convert_download("adi-triggers", [archive], out)
    images, labels = data.load_dataset(out)
    assert list(labels) == [label_of[name] for name in string_order]
    for k, name in enumerate(string_order):
        expected = np.asarray(CenterCrop(32)(Image.fromarray(pics[int(name[:-4])])))
        assert np.array_equal(images[k], expected), name
    # the same files read from an unpacked folder
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "unpacked")
    data.convert_download(
        "adi-triggers",
        [],
        tmp_path / "f.npz",
        folder=str(tmp_path / "unpacked" / "WatermarkNN-448bf51" / "data" / "trigger_set"),
    )
    assert np.array_equal(data.load_dataset(tmp_path / "f.npz")[0], images)


def test_abstract_triggers_are_distinct_and_seeded():
    a, la = offline.abstract_triggers(50, seed=0, classes=10)
    b, lb = offline.abstract_triggers(50, seed=0, classes=10)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert (
        len({img.tobytes() for img in a}) == 50 and set(la) <= set(range(10)) and len(set(la)) > 5
    )
