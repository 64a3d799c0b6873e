"""FeatureNorm, the jigsaw pseudo-OOD transform and NormRatio, pinned on hand-built tensors."""

import numpy as np
import pytest
import torch

from oodrepro import featurenorm, features, models, scores

pytestmark = pytest.mark.fits  # trains or fits, then asserts: CI runs it under two roundings


def test_feature_norm_is_the_channel_mean_of_spatial_norms_after_relu():
    a = torch.zeros(1, 2, 2, 2)
    a[0, 0] = torch.tensor([[3.0, -4.0], [0.0, 0.0]])  # ReLU drops the −4: norm 3
    a[0, 1] = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # norm 5
    assert featurenorm.feature_norm(a).item() == pytest.approx(4.0)
    # not the norm of the pooled vector (‖(0.75, 1.75)‖ ≈ 1.90), nor one Frobenius norm (√34 ≈ 5.83)
    assert featurenorm.feature_norm(a).item() != pytest.approx(
        float(torch.relu(a).mean((2, 3)).norm())
    )


def _tiles(img):
    return [img[:, r * 10 : r * 10 + 10, c * 10 : c * 10 + 10] for r in range(3) for c in range(3)]


def test_jigsaw_only_permutes_tiles_and_zeroes_the_border():
    torch.manual_seed(0)
    z = torch.randn(4, 3, 32, 32)
    perms = featurenorm.jigsaw_permutations(4, seed=1)
    out = featurenorm.jigsaw(z, perms)
    for i in range(4):
        src, dst = _tiles(z[i]), _tiles(out[i])
        for d in range(9):
            assert torch.equal(dst[d], src[perms[i, d]])  # position d holds source tile perms[i, d]
        assert sorted(perms[i].tolist()) == list(range(9))
    assert (out[:, :, 30:, :] == 0).all() and (out[:, :, :, 30:] == 0).all()
    inner = (slice(None), slice(None), slice(0, 30), slice(0, 30))
    assert torch.equal(
        torch.sort(out[inner].flatten(1)).values, torch.sort(z[inner].flatten(1)).values
    )


def test_identity_permutation_keeps_the_30x30_region():
    z = torch.randn(1, 3, 32, 32)
    out = featurenorm.jigsaw(z, torch.arange(9)[None])
    assert torch.equal(out[:, :, :30, :30], z[:, :, :30, :30])


def test_jigsaw_permutations_are_seeded_and_uniform_enough():
    a, b = featurenorm.jigsaw_permutations(2000, 3), featurenorm.jigsaw_permutations(2000, 3)
    assert torch.equal(a, b) and not torch.equal(a, featurenorm.jigsaw_permutations(2000, 4))
    counts = torch.bincount(a[:, 0], minlength=9).float()
    assert (
        counts.min() > 150 and counts.max() < 300
    )  # each source tile ≈ 2000/9 ≈ 222 times at position 0


def test_norm_ratio_is_a_mean_of_per_image_ratios():
    fn_id = np.array([[2.0, 4.0], [6.0, 8.0]])
    fn_jig = np.array([[1.0, 2.0], [2.0, 2.0]])
    np.testing.assert_allclose(
        featurenorm.norm_ratio(fn_id, fn_jig), [2.5, 3.0]
    )  # ratio of means: [8/3, 3]


def test_select_block():
    names = [f"layer{i}" for i in range(4)]
    ratios = np.array([1.0, 3.0, 2.0, 0.5])
    assert featurenorm.select_block(ratios, names) == 1
    assert featurenorm.select_block(ratios, names, "layer3") == 3
    assert featurenorm.select_block(ratios, names, 2) == 2
    with pytest.raises(KeyError):
        featurenorm.select_block(ratios, names, "layer9")
    r18 = [f"layer{s}.{i}" for s in range(1, 5) for i in range(2)]
    with pytest.warns(UserWarning, match="layer4.0"):
        featurenorm.select_block(np.arange(8.0), r18, arch="resnet18")


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = models.build("resnet18", num_classes=3, width=0.0625, normalization="half").eval()
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    return model, images


def test_dumped_featnorm_matches_the_blocks(tiny):
    model, images = tiny
    feats = features.extract(model, images, batch_size=4)
    with torch.no_grad():
        out = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, return_blocks=True)
    direct = torch.stack([featurenorm.feature_norm(b) for b in out.blocks], 1).numpy()
    np.testing.assert_allclose(feats["featnorm"], direct, rtol=1e-5)


def test_jigsaw_features_use_each_images_own_permutation_in_normalised_space(tiny):
    model, images = tiny
    feats = features.extract(
        model, images, batch_size=4, transform=featurenorm.jigsaw_transform(6, seed=2)
    )
    perms = featurenorm.jigsaw_permutations(6, 2)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        direct = model.forward_normalized(
            featurenorm.jigsaw(model.normalize(x), perms), return_blocks=True
        )
    direct_fn = torch.stack([featurenorm.feature_norm(b) for b in direct.blocks], 1).numpy()
    np.testing.assert_allclose(feats["featnorm"], direct_fn, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:NormRatio selected")
def test_featurenorm_score_uses_the_selected_block(tiny):
    model, images = tiny
    plain = features.extract(model, images)
    jig = features.extract(model, images, transform=featurenorm.jigsaw_transform(6, seed=0))
    for key in ("block_names", "arch"):
        plain[key] = jig[key] = np.array(model.block_names if key == "block_names" else model.arch)
    score = scores.get("featurenorm")
    state = score.fit(plain, jig, block="auto")
    expected_ratio = (plain["featnorm"] / jig["featnorm"]).mean(0)
    np.testing.assert_allclose(state["normratio"], expected_ratio, rtol=1e-6)
    assert int(state["block"]) == int(np.argmax(expected_ratio))
    np.testing.assert_allclose(score.score(plain, state), plain["featnorm"][:, int(state["block"])])
    pinned = score.fit(plain, jig, block="layer2.1")
    assert int(pinned["block"]) == 3


def test_block_table_ranks_blocks_by_auroc():
    rng = np.random.default_rng(0)
    fn_id = rng.normal(5, 1, (40, 3))
    fn_ood = {
        "a": np.column_stack([rng.normal(5, 1, 30), rng.normal(0, 1, 30), rng.normal(4, 1, 30)])
    }
    table = featurenorm.block_table(np.array([1.0, 2.0, 1.5]), ["b0", "b1", "b2"], 1, fn_id, fn_ood)
    assert list(table["selected"]) == [False, True, False]
    assert table.loc[1, "auroc rank"] == 1 and table.loc[1, "auroc a"] > 99
