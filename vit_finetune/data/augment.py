"""Training augmentation on whole uint8 batches on the training device: random resized crop, flip,
RandAugment / TrivialAugment drawn per image, random erasing, Mixup / CutMix.

Every random parameter comes from torch's global (CPU) RNG, so seeded runs reproduce and resume exactly on any
device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .arguments import DataArguments
from .processor import channel_stats, normalize, standardize


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _blend(image: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # PIL ImageEnhance semantics: factor 1 keeps the image, 0 gives `other`, >1 extrapolates away from it.
    return (other + (image - other) * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def _sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # PIL's SMOOTH kernel, borders left untouched, as torchvision's adjust_sharpness does.
    channels = images.shape[1]
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=images.device) / 13.0
    blurred = F.conv2d(images, kernel.expand(channels, 1, 3, 3).to(images.dtype), groups=channels)
    degenerate = images.clone()
    degenerate[..., 1:-1, 1:-1] = blurred
    return _blend(images, degenerate, factor)


def _posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    step = (2.0 ** (8 - bits)).view(-1, 1, 1, 1).to(images)
    return torch.floor(torch.round(images * 255.0) / step) * step / 255.0


def _autocontrast(images: torch.Tensor) -> torch.Tensor:
    low = images.amin(dim=(-2, -1), keepdim=True)
    high = images.amax(dim=(-2, -1), keepdim=True)
    scale = torch.where(high > low, 1.0 / (high - low).clamp_min(1e-6), torch.ones_like(high))
    offset = torch.where(high > low, low, torch.zeros_like(low))
    return ((images - offset) * scale).clamp_(0.0, 1.0)


class PerSampleAutoAugment(torch.nn.Module):
    """RandAugment / TrivialAugment with the operation *and* magnitude drawn per image.

    kornia's and torchvision's versions pick one operation per call, i.e. per batch; with batch augmentation that
    would give a whole batch the same operation, so the choice is made per image here and each operation runs once
    on the images that drew it. Operations and ranges follow torchvision (RandAugment: N ops at a fixed magnitude
    M/30; TrivialAugment: one op at a uniformly drawn magnitude, "wide" ranges). Images are float in [0, 1].
    """

    GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
    # op -> (RandAugment range, TrivialAugment-wide range) at magnitude 1. Translations are fractions of the side.
    RANGES = {
        "shear_x": (0.3, 0.99),
        "shear_y": (0.3, 0.99),
        "translate_x": (150.0 / 331.0, 32.0 / 224.0),
        "translate_y": (150.0 / 331.0, 32.0 / 224.0),
        "rotate": (30.0, 135.0),
        "brightness": (0.9, 0.99),
        "color": (0.9, 0.99),
        "contrast": (0.9, 0.99),
        "sharpness": (0.9, 0.99),
        "posterize": (4.0, 6.0),  # bits removed at magnitude 1
        "solarize": (1.0, 1.0),
    }

    def __init__(self, policy: str, num_channels: int, num_ops: int = 2, magnitude: int = 9):
        super().__init__()
        if policy not in ("randaugment", "trivialaugment"):
            raise ValueError(f"policy must be 'randaugment' or 'trivialaugment', got {policy!r}")
        self.policy = policy
        self.num_ops = num_ops if policy == "randaugment" else 1
        self.magnitude = magnitude
        self.ops = ["identity", *self.GEOMETRIC, "brightness", "color", "contrast", "sharpness", "posterize",
                    "solarize", "autocontrast", "equalize"]
        if num_channels == 1:
            self.ops.remove("color")  # saturation means nothing for grayscale
        self._range_index = 0 if policy == "randaugment" else 1

    def _range(self, op: str) -> float:
        return self.RANGES[op][self._range_index]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.shape[0]
        for _ in range(self.num_ops):
            # Parameters come from torch's global (CPU) RNG, so a seeded run is reproducible on any device.
            op_ids = torch.randint(len(self.ops), (batch,))
            if self.policy == "trivialaugment":
                magnitude = torch.randint(0, 31, (batch,)).float() / 30.0
            else:
                magnitude = torch.full((batch,), self.magnitude / 30.0)
            sign = torch.randint(0, 2, (batch,)).float() * 2.0 - 1.0
            images = self._augment(images, op_ids, magnitude, sign)
        return images

    def _augment(self, images: torch.Tensor, op_ids: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        device = images.device
        out = images.clone()
        # All geometric ops of this round share one affine warp (one grid_sample for the subset).
        geometric_ids = torch.tensor([self.ops.index(name) for name in self.GEOMETRIC])
        is_geometric = torch.isin(op_ids, geometric_ids)
        if is_geometric.any():
            rows = is_geometric.nonzero().squeeze(1)
            theta = torch.zeros(len(rows), 2, 3)
            theta[:, 0, 0] = theta[:, 1, 1] = 1.0
            for name in self.GEOMETRIC:
                chosen = op_ids[rows] == self.ops.index(name)
                value = (magnitude[rows] * sign[rows] * self._range(name))[chosen]
                if name == "shear_x":
                    theta[chosen, 0, 1] = value
                elif name == "shear_y":
                    theta[chosen, 1, 0] = value
                elif name == "translate_x":
                    theta[chosen, 0, 2] = 2.0 * value  # affine_grid coordinates span [-1, 1]
                elif name == "translate_y":
                    theta[chosen, 1, 2] = 2.0 * value
                else:
                    angle = torch.deg2rad(value)
                    theta[chosen, 0, 0], theta[chosen, 0, 1] = torch.cos(angle), -torch.sin(angle)
                    theta[chosen, 1, 0], theta[chosen, 1, 1] = torch.sin(angle), torch.cos(angle)
            rows = rows.to(device)
            subset = images[rows]
            grid = F.affine_grid(theta.to(device, subset.dtype), list(subset.shape), align_corners=False)
            out[rows] = F.grid_sample(subset, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        for op_index, name in enumerate(self.ops):
            if name == "identity" or name in self.GEOMETRIC:
                continue
            chosen = op_ids == op_index
            if not chosen.any():
                continue
            rows = chosen.nonzero().squeeze(1).to(device)
            subset = images[rows]
            m = magnitude[chosen].to(device)
            factor = 1.0 + (m * sign[chosen].to(device)) * (self._range(name) if name in self.RANGES else 0.0)
            if name == "brightness":
                result = _blend(subset, torch.zeros_like(subset), factor)
            elif name == "color":
                result = _blend(subset, _grayscale(subset).expand_as(subset), factor)
            elif name == "contrast":
                result = _blend(subset, _grayscale(subset).mean(dim=(-3, -2, -1), keepdim=True).expand_as(subset), factor)
            elif name == "sharpness":
                result = _sharpness(subset, factor)
            elif name == "posterize":
                result = _posterize(subset, 8 - torch.round(m * self._range(name)))
            elif name == "solarize":
                threshold = (1.0 - m).view(-1, 1, 1, 1)
                result = torch.where(subset >= threshold, 1.0 - subset, subset)
            elif name == "autocontrast":
                result = _autocontrast(subset)
            else:  # equalize
                import kornia

                result = kornia.enhance.equalize(subset)
            out[rows] = result
        return out


class MixupCutmix(torch.nn.Module):
    """Mixup and CutMix with per-image mixing weights, returning soft targets that sum to 1.

    Image i is mixed with image perm[i]; lambda_i ~ Beta(alpha, alpha). For CutMix a box of area (1 - lambda_i)
    is pasted and lambda_i is recomputed from the box actually pasted (after clipping at the border)."""

    def __init__(self, num_labels: int, mixup_alpha: float, cutmix_alpha: float, prob: float = 1.0, switch_prob: float = 0.5):
        super().__init__()
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("MixupCutmix needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.num_labels = num_labels
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob

    @staticmethod
    def _beta(alpha: float, count: int) -> torch.Tensor:
        return torch.distributions.Beta(alpha, alpha).sample((count,)) if alpha > 0 else torch.ones(count)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = images.shape
        device = images.device
        perm = torch.randperm(batch)
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = torch.rand(batch) < self.switch_prob
        else:
            use_cutmix = torch.full((batch,), self.cutmix_alpha > 0)
        lam = torch.where(use_cutmix, self._beta(self.cutmix_alpha, batch), self._beta(self.mixup_alpha, batch))
        lam = torch.where(torch.rand(batch) < self.prob, lam, torch.ones(batch))

        # CutMix boxes (vectorised): centre uniform in the image, sides sqrt(1 - lam) of the image's.
        cut = torch.sqrt(1.0 - lam)
        cy, cx = torch.rand(batch) * height, torch.rand(batch) * width
        y0 = (cy - cut * height / 2).round().clamp(0, height).long()
        y1 = (cy + cut * height / 2).round().clamp(0, height).long()
        x0 = (cx - cut * width / 2).round().clamp(0, width).long()
        x1 = (cx + cut * width / 2).round().clamp(0, width).long()
        box_area = ((y1 - y0) * (x1 - x0)).float() / (height * width)
        lam = torch.where(use_cutmix, 1.0 - box_area, lam)

        partner = images[perm.to(device)]
        rows = torch.arange(height).view(1, height, 1)
        cols = torch.arange(width).view(1, 1, width)
        inside = (rows >= y0.view(-1, 1, 1)) & (rows < y1.view(-1, 1, 1)) & (cols >= x0.view(-1, 1, 1)) & (cols < x1.view(-1, 1, 1))
        inside &= use_cutmix.view(-1, 1, 1)
        lam_d = lam.to(device).view(-1, 1, 1, 1)
        mixed = torch.where(use_cutmix.to(device).view(-1, 1, 1, 1), images, lam_d * images + (1.0 - lam_d) * partner)
        mixed = torch.where(inside.to(device).unsqueeze(1), partner, mixed)

        one_hot = F.one_hot(labels, self.num_labels).float()
        targets = lam_d.view(-1, 1) * one_hot + (1.0 - lam_d.view(-1, 1)) * one_hot[perm.to(device)]
        return mixed, targets


class BatchAugmentation(torch.nn.Module):
    """Training augmentation for whole uint8 batches on the training device.

    `forward(images uint8 (B, C, H, W), labels int64 (B,)) -> (normalised float32 images, targets)`, in order:
    random resized crop, horizontal flip, RandAugment / TrivialAugment, normalisation, random erasing (erased
    pixels become 0, i.e. the mean colour), Mixup / CutMix. `targets` are soft (B, num_labels) rows summing to 1
    when Mixup or CutMix is on, else the int64 labels. Every random parameter is drawn per image from torch's
    global RNG. In eval mode (`.eval()`) it only normalises.
    """

    def __init__(
        self,
        data_args: DataArguments,
        *,
        image_size: int,
        num_channels: int,
        num_labels: int,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        super().__init__()
        import kornia.augmentation as K

        self.mean = channel_stats(mean, num_channels, "mean")
        self.std = channel_stats(std, num_channels, "std")
        self.num_labels = num_labels
        min_scale = data_args.random_resized_crop_min_scale
        # "resample" crops the whole batch with one warp; kornia's default "slice" loops over the images.
        self.crop = (
            K.RandomResizedCrop((image_size, image_size), scale=(min_scale, 1.0), cropping_mode="resample")
            if min_scale < 1.0 else None
        )
        self.flip = K.RandomHorizontalFlip() if data_args.hflip else None
        self.auto_augment = (
            PerSampleAutoAugment(data_args.auto_augment, num_channels, data_args.randaugment_num_ops,
                                 data_args.randaugment_magnitude)
            if data_args.auto_augment != "none" else None
        )
        self.erasing = K.RandomErasing(p=data_args.random_erasing_prob, value=0.0) if data_args.random_erasing_prob > 0 else None
        self.mix = (
            MixupCutmix(num_labels, data_args.mixup_alpha, data_args.cutmix_alpha, data_args.mixup_prob, data_args.mixup_switch_prob)
            if data_args.mixup_alpha > 0 or data_args.cutmix_alpha > 0 else None
        )

    @property
    def soft_targets(self) -> bool:
        """True when training targets are (B, num_labels) probabilities (Mixup / CutMix on)."""
        return self.mix is not None

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(f"BatchAugmentation expects uint8 images (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if not self.training:
            return normalize(images, self.mean, self.std), labels
        x = images.float().div_(255.0)
        if self.crop is not None:
            x = self.crop(x)
        if self.flip is not None:
            x = self.flip(x)
        if self.auto_augment is not None:
            x = self.auto_augment(x)
        x = standardize(x, self.mean, self.std)
        if self.erasing is not None:
            x = self.erasing(x)
        if self.mix is not None:
            return self.mix(x, labels)
        return x, labels


__all__ = ["BatchAugmentation", "MixupCutmix", "PerSampleAutoAugment"]
