"""Batch augmentation: shapes, dtypes, soft-target mass, per-sample randomness, reproducibility, normalisation."""

from __future__ import annotations

import pytest
import torch

from vit_finetune.data import BatchAugmentation, DataArguments, MixupCutmix, PerSampleAutoAugment, normalize

MEAN, STD = (0.5,), (0.25,)


def batch(size: int = 32, channels: int = 1, side: int = 28, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (size, channels, side, side), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (size,), generator=generator)
    return images, labels


def augmentation(channels: int = 1, side: int = 28, **overrides) -> BatchAugmentation:
    args = DataArguments(train_dir="unused", **overrides)
    return BatchAugmentation(args, image_size=side, num_channels=channels, num_labels=10, mean=MEAN * channels, std=STD * channels)


def test_normalize_values_and_dtype_check() -> None:
    images = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)
    out = normalize(images, MEAN, STD)
    assert out.dtype == torch.float32
    assert torch.allclose(out, (images.float() / 255 - 0.5) / 0.25)
    with pytest.raises(TypeError, match="uint8"):
        normalize(images.float(), MEAN, STD)
    with pytest.raises(ValueError, match="3 values"):
        normalize(torch.zeros(2, 2, 4, 4, dtype=torch.uint8), (0.1, 0.2, 0.3), (1, 1, 1))


def test_everything_off_is_exactly_normalize() -> None:
    aug = augmentation(hflip=False, random_resized_crop_min_scale=1.0)
    images, labels = batch()
    out, targets = aug(images, labels)
    assert torch.equal(out, normalize(images, MEAN, STD)) and torch.equal(targets, labels)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_full_recipe_shapes_dtypes_and_soft_targets(channels: int, policy: str) -> None:
    aug = augmentation(channels, auto_augment=policy, random_erasing_prob=0.25, mixup_alpha=0.8, cutmix_alpha=1.0,
                       random_resized_crop_min_scale=0.35).to(torch.device("cpu"))  # an nn.Module that moves
    images, labels = batch(channels=channels)
    out, targets = aug(images, labels)
    assert out.shape == images.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert aug.soft_targets and targets.shape == (32, 10) and targets.dtype == torch.float32
    assert torch.allclose(targets.sum(dim=1), torch.ones(32)) and (targets >= 0).all()
    # Each row's mass sits on its own label and at most one partner label, and its own label keeps some weight.
    own = targets.gather(1, labels[:, None]).squeeze(1)
    assert ((targets > 0).sum(dim=1) <= 2).all() and (own > 0).all()
    # Normalised range: (0 - 0.5) / 0.25 .. (1 - 0.5) / 0.25.
    assert out.min() >= -2.0 - 1e-5 and out.max() <= 2.0 + 1e-5


def test_cutmix_target_weights_equal_the_pasted_area() -> None:
    # Every image is one constant value (its index), so pixel counts show exactly how much was pasted.
    size, side = 16, 20
    images = torch.arange(size, dtype=torch.uint8).mul(10).view(size, 1, 1, 1).expand(size, 1, side, side).contiguous()
    labels = torch.arange(size)
    mixer = MixupCutmix(num_labels=size, mixup_alpha=0.0, cutmix_alpha=1.0)
    torch.manual_seed(0)
    mixed, targets = mixer(images.float(), labels)
    for i in range(size):
        own_fraction = (mixed[i] == images[i].float()).float().mean()
        assert torch.isclose(own_fraction, targets[i, i], atol=1e-6), i


def test_mixup_blends_images_with_the_target_weights() -> None:
    images = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
    labels = torch.tensor([0, 1])
    torch.manual_seed(1)
    mixed, targets = MixupCutmix(num_labels=2, mixup_alpha=1.0, cutmix_alpha=0.0)(images, labels)
    # Image value = weight of label 1, whichever way the pair was permuted.
    assert torch.allclose(mixed.mean(dim=(1, 2, 3)), targets[:, 1], atol=1e-6)


def test_parameters_are_per_sample() -> None:
    images = batch(size=1)[0].expand(16, -1, -1, -1).contiguous()  # 16 copies of one image
    labels = torch.zeros(16, dtype=torch.long)
    for overrides in ({"random_resized_crop_min_scale": 0.3, "hflip": False},
                      {"auto_augment": "trivialaugment", "random_resized_crop_min_scale": 1.0, "hflip": False}):
        torch.manual_seed(0)
        out, _ = augmentation(**overrides)(images, labels)
        distinct = {tuple(o.flatten()[:200].tolist()) for o in out}
        assert len(distinct) >= 8, overrides  # a per-batch parameter would give 1 distinct result


def test_seeded_runs_reproduce_and_eval_mode_only_normalises() -> None:
    aug = augmentation(auto_augment="randaugment", random_erasing_prob=0.5, mixup_alpha=0.8, cutmix_alpha=1.0)
    images, labels = batch()
    torch.manual_seed(123)
    first = aug(images, labels)
    torch.manual_seed(123)
    second = aug(images, labels)
    third = aug(images, labels)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(second[0], third[0])
    aug.eval()
    out, targets = aug(images, labels)
    assert torch.equal(out, normalize(images, MEAN, STD)) and torch.equal(targets, labels)


@pytest.mark.parametrize("channels", [1, 3])
def test_every_auto_augment_operation(channels: int) -> None:
    augment = PerSampleAutoAugment("trivialaugment", num_channels=channels)
    # Low contrast and enough pixels (equalize is a no-op below ~256 pixels), so equalize/autocontrast must act.
    images = 0.3 + 0.2 * torch.rand(4, channels, 40, 40)
    for index, name in enumerate(augment.ops):
        op_ids = torch.full((4,), index)
        out = augment._augment(images, op_ids, torch.tensor([0.0, 0.3, 0.7, 1.0]), torch.tensor([1.0, -1.0, 1.0, -1.0]))
        assert out.shape == images.shape and 0.0 <= out.min() and out.max() <= 1.0, name
        if name in ("identity", "brightness", "contrast", "sharpness", "shear_x", "rotate"):
            assert torch.allclose(out[0], images[0], atol=1e-5), name  # magnitude 0 leaves the image alone
        if name != "identity":
            assert not torch.allclose(out[3], images[3]), name  # magnitude 1 changes it
    assert ("color" in augment.ops) == (channels == 3)
