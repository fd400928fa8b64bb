"""Fine-tune (or train from scratch) a Vision Transformer with Accelerate: one loop from a laptop CPU to many GPUs.

    vit-finetune train --config configs/fashion_mnist.yaml [--learning_rate 1e-3 ...]
    accelerate launch -m vit_finetune.train --config configs/fashion_mnist.yaml
    torchrun --nproc_per_node 2 -m vit_finetune.train --config configs/fashion_mnist.yaml

Read top to bottom:

1. Arguments: three dataclasses (model, data, training) filled from a YAML file and command-line overrides
   by transformers' `HfArgumentParser`; unknown keys and bad values stop here, before any work.
2. The model: from a config (from scratch), one of our folders, or a transformers / timm ViT.
3. The optimizer: AdamW with per-parameter groups (no weight decay on norms, biases, position embeddings and
   the CLS token; optional layer-wise lr decay), warmup then cosine.
4. The loop: batches augmented on the device, gradient accumulation, clipping, a NaN guard, evaluation every
   epoch or N steps, atomic checkpoints every N steps and at epoch ends, exact resume.
5. The product: the best model, its image processor, metrics.json, plots and examples in the output folder.

Exact resume, in one paragraph: the shuffle order of epoch e is a pure function of (seed, e) (`EpochSampler`),
a resumed epoch skips the batches already consumed (`accelerator.skip_first_batches`), model/optimizer/
scaler states come back from `accelerator.load_state` and the schedule from trainer_state.json (no pickle is
ever loaded), and every batch reseeds torch's RNG from
(seed, epoch, batch index, process) before augmentation and the forward pass, so mixup, crops, dropout and
stochastic depth draw the same numbers whether or not the run was interrupted.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import typing
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from .checkpointing import DiskFullError
from .output_folder import holds_finished_model

logger = logging.getLogger("vit_finetune.train")

MIXED_PRECISIONS = ("no", "bf16", "fp16")
EVAL_STRATEGIES = ("no", "epoch", "steps")
BEST_METRICS = ("accuracy", "top5_accuracy", "f1_macro", "loss")
TRACKERS = ("none", "all", "tensorboard", "trackio", "wandb", "comet_ml", "mlflow", "aim", "clearml", "dvclive")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")
# Model fields that may change when starting from pretrained weights; the others define the weights' shapes.
PRETRAINED_OVERRIDES = ("image_size", "hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate",
                        "pooling")


class ConfigError(ValueError):
    """A bad configuration key or value, found before any work is done."""


class NonFiniteLossError(RuntimeError):
    """The training loss or the weights became NaN or infinite."""


def _check_finite(arguments: Any) -> None:
    """NaN passes every `<`/`>` range check and inf overflows the step count: refuse both up front."""
    for item in dataclasses.fields(arguments):
        values = getattr(arguments, item.name)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{item.name} must be a finite number, got {value}")


# ==========================================================================================================
# 1. Arguments
# ==========================================================================================================


# The ViTConfig fields a run may set from the command line or YAML (the architecture of a from-scratch model).
ARCHITECTURE_FIELDS = (
    "image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "hidden_act", "position_embedding", "pooling", "patch_embedding", "conv_stem_channels",
    "conv_stem_depth", "layerscale_init", "qkv_bias", "hidden_dropout_prob", "attention_probs_dropout_prob",
    "drop_path_rate",
)


@dataclass
class ModelArguments:
    """Which model to start from. With no `model_name_or_path` a new ViT is built from the fields below."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Start from these weights: a folder written by vit-finetune, a transformers ViT folder or "
                  "Hub id (google/vit-base-patch16-224-in21k), or timm/<name>. Empty: train from scratch."},
    )
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    # --- architecture: used from scratch; only image_size, dropouts and pooling may change a pretrained model ---
    image_size: int | None = field(
        default=None, metadata={"help": "Input resolution. With pretrained weights the position embeddings are "
                                "interpolated to it."})
    patch_size: int | None = field(default=None, metadata={"help": "Patch side in pixels."})
    num_channels: int | None = field(default=None, metadata={"help": "1 (grayscale) or 3 (RGB)."})
    hidden_size: int | None = field(default=None, metadata={"help": "Token width."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Number of transformer blocks."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "Attention heads per block."})
    intermediate_size: int | None = field(default=None, metadata={"help": "MLP width (usually 4 x hidden_size)."})
    hidden_act: str | None = field(default=None, metadata={"help": "MLP activation (gelu, relu, silu ...)."})
    position_embedding: str | None = field(default=None, metadata={"help": "learned or sincos."})
    pooling: str | None = field(default=None, metadata={"help": "cls (CLS token) or mean (mean of patch tokens)."})
    patch_embedding: str | None = field(default=None, metadata={"help": "patch (one strided conv) or conv (stem)."})
    conv_stem_channels: int | None = field(default=None, metadata={"help": "Width of the first stem convolution."})
    conv_stem_depth: int | None = field(default=None, metadata={"help": "3x3 stem convolutions per resolution."})
    layerscale_init: float | None = field(default=None, metadata={"help": "LayerScale initial value (off if unset)."})
    qkv_bias: bool | None = field(default=None, metadata={"help": "Bias on the query/key/value projection."})
    hidden_dropout_prob: float | None = field(default=None, metadata={"help": "Dropout on embeddings and branches."})
    attention_probs_dropout_prob: float | None = field(default=None, metadata={"help": "Attention dropout."})
    drop_path_rate: float | None = field(default=None, metadata={"help": "Stochastic depth of the last block."})
    # --- how to train it ---
    freeze_backbone: bool = field(
        default=False, metadata={"help": "Train only the classification head (a linear probe)."})
    image_mean: list[float] | None = field(
        default=None, metadata={"help": "Normalisation mean per channel (default: the source model's, else 0.5)."})
    image_std: list[float] | None = field(
        default=None, metadata={"help": "Normalisation std per channel (default: the source model's, else 0.5)."})

    def architecture_overrides(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS if getattr(self, name) is not None}

    def __post_init__(self) -> None:
        _check_finite(self)
        overrides = self.architecture_overrides()
        if self.model_name_or_path:
            fixed = sorted(set(overrides) - set(PRETRAINED_OVERRIDES))
            if fixed:
                raise ConfigError(
                    f"{', '.join(fixed)} cannot change when starting from pretrained weights "
                    f"({self.model_name_or_path}); only {', '.join(PRETRAINED_OVERRIDES)} can"
                )
        else:
            from .configuration_vit import ViTConfig

            ViTConfig(**overrides)  # validates the architecture now (errors name the field), not after data loading
        if (self.image_mean is None) != (self.image_std is None):
            raise ConfigError("image_mean and image_std go together: give both or neither")
        if self.image_std is not None and any(s <= 0 for s in self.image_std):
            raise ConfigError(f"image_std must be positive, got {self.image_std}")


@dataclass
class TrainingArguments:
    """How to train. Names follow transformers' TrainingArguments and its image-classification examples."""

    output_dir: str | None = field(default=None, metadata={"help": "Where the model folder and checkpoints go."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start afresh in an output_dir that already has checkpoints (deletes them)."})
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, shuffling, augmentation and dropout."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs to train (may be fractional)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; overrides num_train_epochs if > 0."})
    max_train_minutes: float | None = field(
        default=None, metadata={"help": "Wall-clock budget: stop cleanly (evaluate, save) once it is spent."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Images per device per forward pass."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Images per device at evaluation."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Forward passes per optimizer step."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate of AdamW."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay (not on norms, biases, "
                                                         "position embeddings, CLS token)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    layer_decay: float | None = field(
        default=None, metadata={"help": "Layer-wise lr decay: block i of L gets lr * layer_decay^(L+1-i) (BEiT)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": f"One of {', '.join(SCHEDULERS)}."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Fraction of the steps spent warming up."})
    warmup_steps: int = field(default=0, metadata={"help": "Warmup steps (overrides warmup_ratio if > 0)."})
    label_smoothing_factor: float = field(default=0.0, metadata={"help": "Label smoothing of the cross-entropy."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    mixed_precision: str | None = field(
        default=None, metadata={"help": "no, bf16 (CPU and GPU) or fp16 (GPU); default: Accelerate's config."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on the CPU even if a GPU is present."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: epoch, steps or no (end only)."})
    eval_steps: int | None = field(default=None, metadata={"help": "Evaluate every N optimizer steps (steps)."})
    checkpointing_steps: int | None = field(
        default=None, metadata={"help": "Also save a checkpoint every N optimizer steps (one is always saved at "
                                "each epoch end and each evaluation)."})
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Keep the newest N checkpoints (plus the best one)."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "'latest' (the newest checkpoint of output_dir, if any) or a checkpoint folder."})
    metric_for_best_model: str = field(default="accuracy", metadata={"help": f"One of {', '.join(BEST_METRICS)}."})
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Export the best evaluated checkpoint rather than the last."})
    logging_steps: int = field(default=20, metadata={"help": "Read the loss (a host sync) every N optimizer steps."})
    report_to: str = field(default="none", metadata={"help": "Trackers, comma-separated: tensorboard, trackio, all..."})
    run_name: str | None = field(
        default=None, metadata={"help": "Tracker project/run name (default: output_dir's name)."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data loading worker processes."})

    def __post_init__(self) -> None:
        _check_finite(self)
        if not self.output_dir:
            raise ConfigError("output_dir is required")
        positive = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                    "logging_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_steps", "checkpointing_steps", "save_total_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (or unset), got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ConfigError("num_train_epochs must be > 0 (or set max_steps)")
        if self.max_train_minutes is not None and self.max_train_minutes <= 0:
            raise ConfigError(f"max_train_minutes must be > 0, got {self.max_train_minutes}")
        for name, low, high in (("warmup_ratio", 0, 1), ("label_smoothing_factor", 0, 1), ("adam_beta1", 0, 1),
                                ("adam_beta2", 0, 1)):
            if not low <= getattr(self, name) < high:
                raise ConfigError(f"{name} must be in [{low}, {high}), got {getattr(self, name)}")
        for name in ("weight_decay", "max_grad_norm", "warmup_steps", "dataloader_num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        choices = {"lr_scheduler_type": SCHEDULERS, "eval_strategy": EVAL_STRATEGIES,
                   "metric_for_best_model": BEST_METRICS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.mixed_precision is not None and self.mixed_precision not in MIXED_PRECISIONS:
            raise ConfigError(f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}; "
                              f"got {self.mixed_precision!r}")
        if self.mixed_precision == "fp16" and (self.use_cpu or not torch.cuda.is_available()):
            raise ConfigError("mixed_precision fp16 needs a GPU; use bf16 on the CPU")
        if self.eval_strategy == "steps" and not self.eval_steps:
            raise ConfigError("eval_strategy 'steps' needs eval_steps")
        trackers = self.trackers()
        unknown = [t for t in trackers if t not in TRACKERS]
        if unknown:
            raise ConfigError(f"report_to: unknown tracker(s) {unknown}; choose from {', '.join(TRACKERS)}")
        for tracker in set(trackers) - {"none", "all"}:
            # Accelerate only warns about a tracker that is not installed, then logs nothing: fail now instead.
            if importlib.util.find_spec(tracker) is None:
                raise ConfigError(
                    f"report_to {tracker}: the {tracker} package is not installed (pip install {tracker})")

    def trackers(self) -> list[str]:
        return [t.strip() for t in (self.report_to or "none").split(",") if t.strip()]


def _type_matches(value: Any, hint: Any) -> bool:
    """Whether a value read from YAML fits a dataclass field's type (argparse only converts strings)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_type_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if origin in (list, Sequence):
        return isinstance(value, list) and all(_type_matches(v, args[0]) for v in value) if args else True
    if hint is bool:
        return isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _pop_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """Takes `--config FILE` (or `--config=FILE`) out of argv."""
    rest, config = [], None
    items = iter(argv)
    for item in items:
        if item == "--config":
            config = next(items, None)
            if config is None:
                raise ConfigError("--config needs a file")
        elif item.startswith("--config="):
            config = item.split("=", 1)[1]
        else:
            rest.append(item)
    return config, rest


def parse_arguments(argv: list[str], dataclass_types: Sequence[type], prog: str = "vit-finetune train") -> tuple:
    """Fills the dataclasses from `--config FILE.yaml` (or .json) then command-line flags (flags win).

    Raises ConfigError naming the key for unknown keys (with a suggestion) and for values of the wrong type;
    argparse itself rejects unconvertible command-line values, naming the flag.
    """
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        dataclass_types, prog=prog, allow_abbrev=False,
        description="Arguments come from `--config FILE.yaml` (or .json; keys are the option names below) and "
                    "from the command line, which wins. Unknown keys and bad values stop the run before any work.",
    )
    hints = {}
    for dtype in dataclass_types:
        type_hints = typing.get_type_hints(dtype)
        hints.update({f.name: type_hints[f.name] for f in dataclasses.fields(dtype) if f.init})

    def suggest(key: str) -> str:
        close = difflib.get_close_matches(key, list(hints), n=1)
        return f" (did you mean {close[0]!r}?)" if close else ""

    config_path, argv = _pop_config(list(argv))
    from_file: dict[str, Any] = {}
    if config_path:
        path = Path(config_path)
        if not path.is_file():
            raise ConfigError(f"--config {config_path}: no such file")
        try:
            from_file = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{config_path}: not valid YAML: {error}") from error
        if not isinstance(from_file, dict):
            raise ConfigError(f"{config_path}: expected a mapping of argument names to values")
        for key, value in from_file.items():
            if key not in hints:
                raise ConfigError(f"{config_path}: unknown key {key!r}{suggest(str(key))}")
            # Strings go through argparse's conversion below (YAML reads `1e-3` as a string); others must fit.
            if not isinstance(value, str) and not _type_matches(value, hints[key]):
                raise ConfigError(f"{config_path}: {key} = {value!r} is not a valid {_type_name(hints[key])}")
        parser.set_defaults(**from_file)

    *outputs, remaining = parser.parse_args_into_dataclasses(
        argv, return_remaining_strings=True, look_for_args_file=False
    )
    if remaining:
        flag = next((r for r in remaining if r.startswith("-")), remaining[0])
        key = flag.lstrip("-").split("=")[0].replace("-", "_")
        raise ConfigError(f"unknown argument {flag}{suggest(key) if flag.startswith('-') else ''}")
    return tuple(outputs)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def parse_train_arguments(argv: list[str]) -> tuple[ModelArguments, Any, TrainingArguments]:
    from .data import DataArguments

    try:
        return parse_arguments(argv, (ModelArguments, DataArguments, TrainingArguments))
    except ConfigError:
        raise
    except ValueError as error:  # a dataclass __post_init__ (data arguments, ViTConfig) rejected a value
        raise ConfigError(str(error)) from error


def resolved_arguments(*groups: Any) -> dict[str, Any]:
    """All arguments as one flat dict: what `--config` accepts, so a run can be repeated from it."""
    merged: dict[str, Any] = {}
    for group in groups:
        merged.update(asdict(group))
    return merged


# ==========================================================================================================
# 2. The model
# ==========================================================================================================


def load_model(model_args: ModelArguments) -> tuple[Any, list[float] | None, list[float] | None]:
    """The model to train, and the normalisation of its source (None: not known, use 0.5).

    The one place that knows where models come from: `vit_finetune.convert` imports transformers and timm ViTs.
    """
    from .configuration_vit import ViTConfig
    from .modeling_vit import ViTForImageClassification

    overrides = model_args.architecture_overrides()
    if not model_args.model_name_or_path:
        return ViTForImageClassification(ViTConfig(**overrides)), None, None

    from .convert import ModelLoadError, load_pretrained_vit, source_image_processor

    name = model_args.model_name_or_path
    try:
        model = load_pretrained_vit(name, revision=model_args.model_revision, **overrides)
    except ModelLoadError as error:  # no such folder, not a model, Hub unreachable, image_size vs patch_size
        raise ConfigError(str(error)) from None
    try:
        processor = source_image_processor(name, model.config)
        mean, std = list(processor.image_mean), list(processor.image_std)
        if model.config.num_channels == 1 and len(set(mean)) == 1 and len(set(std)) == 1:
            # Our grayscale folders save RGB-repeated statistics (the pipeline sends RGB): one channel's worth.
            mean, std = mean[:1], std[:1]
    except Exception as error:  # noqa: BLE001 - a source without a processor still trains, with a clear note
        logger.warning("no image processor found for %s (%s): normalising with mean 0.5, std 0.5", name, error)
        mean = std = None
    return model, mean, std


def set_labels(model: Any, id2label: dict[int, str], *, announce: bool) -> None:
    """Gives the model the dataset's label set; a different set gets a freshly initialised head."""
    id2label = {int(i): str(name) for i, name in id2label.items()}
    current = {int(i): str(name) for i, name in model.config.id2label.items()}
    if current == id2label and isinstance(model.classifier, torch.nn.Linear):
        return
    if announce:
        logger.info("new label set (%d classes, was %d): the classification head is re-initialised",
                    len(id2label), len(current))
    model.config.id2label = id2label
    model.config.label2id = {name: i for i, name in id2label.items()}
    head = torch.nn.Linear(model.config.hidden_size, len(id2label))
    torch.nn.init.trunc_normal_(head.weight, std=model.config.initializer_range)
    torch.nn.init.zeros_(head.bias)
    model.classifier = head


def build_optimizer(model: torch.nn.Module, args: TrainingArguments) -> torch.optim.AdamW:
    """AdamW over parameter groups: decay or not, and (with layer_decay) a learning rate per depth.

    No weight decay on 1-D tensors (norms, biases, LayerScale), position embeddings or the CLS token: decaying
    them only pulls them towards zero without regularising anything (as in timm, BEiT, DeiT).
    """
    num_layers = model.config.num_hidden_layers

    def depth(name: str) -> int:  # 0 = embeddings, i + 1 = block i, num_layers + 1 = final norm and head
        if name.startswith("vit.embeddings."):
            return 0
        match = re.match(r"vit\.layers\.(\d+)\.", name)
        return int(match.group(1)) + 1 if match else num_layers + 1

    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        no_decay = parameter.ndim <= 1 or name.endswith(("cls_token", "position_embeddings"))
        layer = depth(name) if args.layer_decay else 0
        scale = args.layer_decay ** (num_layers + 1 - layer) if args.layer_decay else 1.0
        group = groups.setdefault((layer, no_decay), {
            "params": [], "names": [], "lr": args.learning_rate * scale,
            "weight_decay": 0.0 if no_decay else args.weight_decay,
        })
        group["params"].append(parameter)
        group["names"].append(name)
    if not groups:
        raise ConfigError("the model has no trainable parameters")
    # fused: one kernel for the whole update instead of ~8 element-wise ops per tensor (about 40% of a
    # ViT-Ti CPU step went to the unfused update; scripts/benchmark_models.py).
    return torch.optim.AdamW(
        list(groups.values()), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
        fused=True,
    )


def compute_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy in float32, against class ids or soft targets (mixup / cutmix)."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


# ==========================================================================================================
# 3. Data order and randomness that survive a restart
# ==========================================================================================================


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffles each epoch with a generator seeded from (seed, epoch) and nothing else.

    Accelerate saves no shuffle order in its checkpoints; with this sampler the order of any epoch can be
    recomputed, so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, num_samples: int, seed: int):
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.randperm(self.num_samples, generator=generator).tolist()

    def __len__(self) -> int:
        return self.num_samples


def reseed_for_batch(seed: int, epoch: int, batch_index: int, process_index: int) -> None:
    """Makes the randomness of one batch (augmentation, dropout, drop path) a function of where it is in training."""
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, batch_index, process_index]).generate_state(1)[0]))


# ==========================================================================================================
# 4. Devices
# ==========================================================================================================


def has_accelerator_device() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())


def accelerator_kwargs(use_cpu: bool, mixed_precision: str | None) -> dict[str, Any]:
    """Device arguments for `Accelerator`, making multi-process CPU runs work without a special flag.

    Under torchrun or `accelerate launch --multi_gpu` on a machine with no GPU, Accelerate (1.15) only turns
    on gloo multi-process training when created with `cpu=True`; otherwise each process trains alone.
    """
    launched_distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = use_cpu or (launched_distributed and not has_accelerator_device())
    return {"cpu": cpu, "mixed_precision": mixed_precision}


# ==========================================================================================================
# 5. Training
# ==========================================================================================================


@dataclass
class TrainerState:
    """Everything about progress that is not a tensor; saved as trainer_state.json in each checkpoint."""

    global_step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress
    step_in_epoch: int = 0  # optimizer steps done within it
    train_samples: int = 0  # images consumed, all processes together
    elapsed_s: float = 0.0  # wall time of training so far, across resumes
    best_metric: float | None = None
    best_step: int | None = None
    best_eval: dict[str, Any] | None = None
    last_eval: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    loss_sum_since_eval: float = 0.0  # for the mean train loss that each history entry records
    loss_count_since_eval: int = 0
    # what must not change between a checkpoint and its resumption (for the order of batches to be the same)
    per_device_train_batch_size: int = 0
    gradient_accumulation_steps: int = 0
    num_processes: int = 0
    seed: int = 0
    train_images: int = 0
    freeze_backbone: bool = False
    # the LR schedule's state (plain numbers): kept here rather than in a pickle that resuming would unpickle
    scheduler: dict[str, Any] | None = None
    # optimizer settings in force, and each change a resumed run made to them: {"step", "field", "from", "to"}
    optimizer_settings: dict[str, Any] = field(default_factory=dict)
    setting_changes: list[dict[str, Any]] = field(default_factory=list)


# Fields that must not change on resume: the order of batches (and the parameter groups) depend on them.
RESUME_INVARIANTS = ("per_device_train_batch_size", "gradient_accumulation_steps", "num_processes", "seed",
                     "train_images", "freeze_backbone")
# Optimizer settings a resumed run may change: they apply from the resume point on, and are recorded.
OPTIMIZER_SETTINGS = ("learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "layer_decay")


def resume(checkpoint: Path, state: TrainerState, accelerator: Any, optimizer: Any, scheduler: Any) -> TrainerState:
    """Loads a checkpoint into the prepared objects and returns its trainer state.

    Optimizer settings changed since the checkpoint (a lower learning rate after a divergence, say) apply from
    the resume point on: `load_state` brings back the checkpoint's values, which are replaced by this run's,
    and each change is recorded in `setting_changes` (metrics.json and the model card show them).
    """
    from . import checkpointing

    saved = TrainerState(**checkpointing.read_trainer_state(checkpoint))
    for name in RESUME_INVARIANTS:
        if getattr(saved, name) != getattr(state, name):
            raise ConfigError(f"{checkpoint} was written with {name}={getattr(saved, name)}, this run has "
                              f"{getattr(state, name)}: an exact resume needs the same value")
    before = saved.optimizer_settings.get("layer_decay")
    if saved.optimizer_settings and (before is None) != (state.optimizer_settings["layer_decay"] is None):
        raise ConfigError(f"{checkpoint} was written with layer_decay={before}: switching layer-wise decay on or "
                          "off changes the optimizer's parameter groups, so it cannot change on resume")
    built = [{"initial_lr": g["initial_lr"], "weight_decay": g["weight_decay"], "betas": g["betas"], "eps": g["eps"]}
             for g in optimizer.param_groups]
    try:
        schedule = saved.scheduler or checkpointing.read_legacy_scheduler_state(checkpoint)
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from None
    checkpointing.load_state_without_pickles(accelerator, checkpoint)
    scheduler.load_state_dict(schedule)
    changes = [{"step": saved.global_step, "field": name, "from": old, "to": state.optimizer_settings[name]}
               for name, old in saved.optimizer_settings.items() if old != state.optimizer_settings.get(name)]
    if changes or not saved.optimizer_settings:  # a checkpoint from before settings were recorded: apply them
        for group, values in zip(optimizer.param_groups, built, strict=True):
            group.update(values)
        scheduler.base_lrs = [values["initial_lr"] for values in built]
        # The learning rate at the resume point on the schedule of the new peak (transformers' schedules are
        # LambdaLR: base lr times a factor of the step).
        lrs = [base * factor(scheduler.last_epoch) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        scheduler._last_lr = lrs
        for change in changes:
            logger.info("resuming with %s=%s (the checkpoint had %s): applied from step %d on",
                        change["field"], change["to"], change["from"], change["step"])
    saved.setting_changes = saved.setting_changes + changes
    saved.optimizer_settings = state.optimizer_settings
    return saved


def check_finite_weights(model: torch.nn.Module, accelerator: Any, step: int, output_dir: Path) -> None:
    """Refuses to save or export weights holding NaN or inf: a checkpoint is only ever a good one.

    A finite loss does not prove finite weights: the update after it may overflow (a huge learning rate).
    """
    bad = torch.zeros((), device=accelerator.device)
    for parameter in model.parameters():
        bad += (~torch.isfinite(parameter.detach())).any()
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")  # FSDP shards: every process must agree
    if bad.item():
        from . import checkpointing

        latest = checkpointing.latest_checkpoint(output_dir)
        raise NonFiniteLossError(f"the weights became NaN or infinite by step {step}; training stopped and they "
                                 f"were not saved. {recovery_advice(latest)}")


def recovery_advice(latest: Path | None) -> str:
    if latest is None:
        return ("No checkpoint was saved before it. Start again with a lower --learning_rate (and "
                "--overwrite_output_dir), keep --max_grad_norm on, or use bf16 rather than fp16.")
    return (f"Last good checkpoint: {latest}. Continue from it with a lower learning rate: "
            f"--resume_from_checkpoint {latest} --learning_rate <lower> (keep --max_grad_norm on; bf16 is steadier "
            "than fp16).")


def is_better(value: float, best: float | None, metric: str) -> bool:
    from .evaluation import LOWER_IS_BETTER

    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


def check_output_dir(output_dir: Path, model_args: ModelArguments) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir {output_dir} is a file, not a folder")
    source = model_args.model_name_or_path
    if source and Path(source).is_dir() and output_dir.is_dir() and output_dir.samefile(source):
        raise ConfigError(f"output_dir {output_dir} is the model_name_or_path folder: training would overwrite "
                          "the weights it starts from; choose another output_dir")


def train(model_args: ModelArguments, data_args: Any, args: TrainingArguments) -> dict[str, Any]:
    """Runs one training job and writes the model folder; returns the contents of metrics.json.

    The main process holds the output folder's lock for the whole run. A run refused before any work (a
    ConfigError) removes the output folder if it made it, so a typo leaves nothing behind.
    """
    from .output_folder import OutputFolderError, OutputLock

    output_dir = Path(args.output_dir)
    check_output_dir(output_dir, model_args)
    main_process = int(os.environ.get("RANK", "0")) == 0  # Accelerate's own rule, before it is set up
    lock, created = OutputLock(output_dir), False
    if main_process:
        created = not output_dir.exists()
        output_dir.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire()
        except OutputFolderError as error:
            raise ConfigError(str(error)) from None
    try:
        return _train(model_args, data_args, args)
    except ConfigError:
        if created:
            lock.release()
            shutil.rmtree(output_dir, ignore_errors=True)
        raise
    finally:
        lock.release()


def _train(model_args: ModelArguments, data_args: Any, args: TrainingArguments) -> dict[str, Any]:
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from . import checkpointing
    from .data import BatchAugmentation, BatchReader, keep_batch, prepare_datasets
    from .evaluation import MetricSuite, evaluate_model, format_metrics

    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        **accelerator_kwargs(args.use_cpu, args.mixed_precision),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=[t for t in args.trackers() if t != "none"] or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # Pinned host memory lets the copy of the next batch to the GPU overlap with compute.
        dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()),
    )
    main_process = accelerator.is_main_process
    logger.info("%d process(es) on %s (%s), mixed precision %s", accelerator.num_processes, accelerator.device,
                accelerator.distributed_type.value, accelerator.mixed_precision)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls on Ampere+: free speed for training
        torch.backends.cudnn.allow_tf32 = True

    # ---- where are we: a fresh run, or a resumed one? -----------------------------------------------------
    try:
        resume_from = checkpointing.resolve_resume_path(output_dir, args.resume_from_checkpoint)
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from None
    if args.resume_from_checkpoint == "latest" and resume_from is None:
        logger.info("resume_from_checkpoint=latest: %s has no checkpoint yet, starting from the beginning",
                    output_dir)
    existing = checkpointing.list_checkpoints(output_dir)
    if resume_from is None and (existing or holds_finished_model(output_dir)):
        if not args.overwrite_output_dir:
            what = f"checkpoints ({existing[-1].name})" if existing else "a finished model"
            raise ConfigError(
                f"{output_dir} already holds {what}: pass --resume_from_checkpoint latest to continue, or "
                "--overwrite_output_dir to start again (the old model stays until the new one is complete)"
            )
        if main_process and existing:
            shutil.rmtree(checkpointing.checkpoints_root(output_dir))
    # This run's own records live beside its checkpoints until the model folder is published.
    run_dir = checkpointing.checkpoints_root(output_dir)
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpointing.remove_incomplete(output_dir)
        arguments = resolved_arguments(model_args, data_args, args)
        (run_dir / "training_args.json").write_text(json.dumps(arguments, indent=2, default=str))
    accelerator.wait_for_everyone()

    # ---- model and data -----------------------------------------------------------------------------------
    set_seed(args.seed)  # same initial weights on every process
    with accelerator.local_main_process_first():  # one Hub download per machine; the others read the cache
        model, source_mean, source_std = load_model(model_args)
    config = model.config
    try:
        prepared = prepare_datasets(
            data_args,
            image_size=config.image_size,
            num_channels=config.num_channels,
            output_dir=str(run_dir),
            seed=args.seed,
            main_process_first=accelerator.main_process_first,
        )
    except ValueError as error:  # missing folders, empty splits, unknown columns: the message names them
        raise ConfigError(f"data: {error}") from error
    id2label = {int(i): name for i, name in prepared.id2label.items()}
    set_labels(model, id2label, announce=bool(model_args.model_name_or_path))
    # The loss is computed here, but the saved config must say what the head is for.
    config.problem_type = "single_label_classification"
    mean = model_args.image_mean or source_mean or [0.5] * config.num_channels
    std = model_args.image_std or source_std or [0.5] * config.num_channels
    if len(mean) != config.num_channels or len(std) != config.num_channels:
        raise ConfigError(f"image_mean/image_std need {config.num_channels} values (one per channel), "
                          f"got {mean} / {std}")
    if model_args.freeze_backbone:
        for parameter in model.vit.parameters():
            parameter.requires_grad_(False)
        logger.info("freeze_backbone: training the classification head only (linear probe)")
    num_parameters = sum(p.numel() for p in model.parameters())
    num_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("model: %.2f M parameters (%.2f M trainable), %d classes, %dx%d px, %d channel(s)",
                num_parameters / 1e6, num_trainable / 1e6, len(id2label), config.image_size, config.image_size,
                config.num_channels)

    augment = BatchAugmentation(data_args, image_size=config.image_size, num_channels=config.num_channels,
                                num_labels=len(id2label), mean=mean, std=std)
    augment = augment.to(accelerator.device)
    train_sampler = EpochSampler(len(prepared.train), args.seed)
    # BatchReader: whole batches from the Arrow table in one read (datasets' row-by-row formatting cost ~10%
    # of the Fashion-MNIST recipe's step).
    loader_kwargs = dict(num_workers=args.dataloader_num_workers, pin_memory=torch.cuda.is_available(),
                         persistent_workers=args.dataloader_num_workers > 0, collate_fn=keep_batch)
    train_loader = torch.utils.data.DataLoader(
        BatchReader(prepared.train), batch_size=args.per_device_train_batch_size, sampler=train_sampler,
        **loader_kwargs,
    )
    eval_loader = torch.utils.data.DataLoader(
        BatchReader(prepared.validation), batch_size=args.per_device_eval_batch_size, **loader_kwargs
    )
    optimizer = build_optimizer(model, args)

    # The loaders must be sharded before the schedule is sized: each process sees 1/N of the batches.
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    batches_per_epoch = len(train_loader)
    steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    warmup_steps = args.warmup_steps or math.ceil(args.warmup_ratio * max_steps)
    # Not passed to prepare(): Accelerate's wrapper would step it once per process per step. Stepped by hand
    # after each optimizer update; its state goes into trainer_state.json, not into Accelerate's custom state
    # (a pickle that load_state reads with weights_only=False).
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=warmup_steps,
                              num_training_steps=max_steps)
    with accelerator.local_main_process_first():  # one process per machine copies the metric modules first
        metrics = MetricSuite()

    state = TrainerState(per_device_train_batch_size=args.per_device_train_batch_size,
                         gradient_accumulation_steps=args.gradient_accumulation_steps,
                         num_processes=accelerator.num_processes, seed=args.seed, train_images=len(prepared.train),
                         freeze_backbone=model_args.freeze_backbone,
                         optimizer_settings={name: getattr(args, name) for name in OPTIMIZER_SETTINGS})
    if resume_from is not None:
        state = resume(resume_from, state, accelerator, optimizer, scheduler)
        logger.info("resumed from %s: epoch %d, step %d of %d", resume_from, state.epoch, state.global_step,
                    max_steps)

    total_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes
    logger.info("%d training images, %d validation images; %d steps of %d images (%d per epoch, %d epochs), "
                "warmup %d", len(prepared.train), len(prepared.validation), max_steps, total_batch,
                steps_per_epoch, num_epochs, warmup_steps)
    if any(t != "none" for t in args.trackers()):
        loggable = {k: v for k, v in resolved_arguments(model_args, data_args, args).items()
                    if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(args.run_name or output_dir.name, config=loggable)

    # ---- helpers of the loop --------------------------------------------------------------------------------
    run_start = time.time()
    elapsed_at_start = state.elapsed_s
    step_at_start = state.global_step
    last_eval_step = state.history[-1]["step"] if state.history else -1
    loss_sum = torch.zeros((), device=accelerator.device)  # on the device: no host sync per step
    loss_count = torch.zeros((), device=accelerator.device)
    nonfinite = torch.zeros((), device=accelerator.device, dtype=torch.bool)

    def elapsed() -> float:
        return elapsed_at_start + time.time() - run_start

    def sync() -> tuple[float | None, bool]:
        """One host sync: mean loss since the last one (all processes), and whether the time budget is spent.

        Also the NaN guard: raises before anything is saved from weights a non-finite loss touched.
        """
        time_up = args.max_train_minutes is not None and elapsed() > 60 * args.max_train_minutes
        packed = torch.stack([loss_sum, loss_count, nonfinite.float(),
                              torch.tensor(float(time_up), device=accelerator.device)])
        if accelerator.num_processes > 1:
            packed = accelerator.reduce(packed, reduction="sum")  # every process then agrees on what to do
        total, count, bad, up = packed.tolist()
        loss_sum.zero_()
        loss_count.zero_()
        if bad:
            latest = checkpointing.latest_checkpoint(output_dir)
            raise NonFiniteLossError(
                f"the training loss became NaN or infinite by step {state.global_step}; training stopped and "
                f"nothing was saved after it. {recovery_advice(latest)}"
            )
        mean_loss = total / count if count else None
        state.loss_sum_since_eval += total
        state.loss_count_since_eval += int(count)
        return mean_loss, bool(up)

    def run_evaluation() -> None:
        nonlocal last_eval_step
        result = evaluate_model(model, eval_loader, accelerator, metrics, mean=mean, std=std)
        values = result.metrics
        count = state.loss_count_since_eval
        train_loss = state.loss_sum_since_eval / count if count else None
        state.loss_sum_since_eval, state.loss_count_since_eval = 0.0, 0
        record = {"step": state.global_step, "epoch": round(state.global_step / steps_per_epoch, 4),
                  "train_loss": train_loss, "eval_accuracy": values["accuracy"], "eval_loss": values["loss"],
                  "eval_top5_accuracy": values["top5_accuracy"], "eval_f1_macro": values["f1_macro"],
                  "learning_rate": max(scheduler.get_last_lr()), "elapsed_s": round(elapsed(), 2)}
        state.history.append(record)
        state.last_eval = dict(values, step=state.global_step)
        score = values[args.metric_for_best_model]
        if is_better(score, state.best_metric, args.metric_for_best_model):
            state.best_metric, state.best_step, state.best_eval = score, state.global_step, state.last_eval
        last_eval_step = state.global_step
        accelerator.log({f"eval/{k}": v for k, v in values.items()}, step=state.global_step)
        logger.info("eval at step %d (epoch %.2f, %.1f min): %s%s", state.global_step, record["epoch"],
                    record["elapsed_s"] / 60, format_metrics(values),
                    " (best so far)" if state.best_step == state.global_step else "")

    def save(epoch: int, step_in_epoch: int) -> None:
        check_finite_weights(model, accelerator, state.global_step, output_dir)
        state.epoch, state.step_in_epoch, state.elapsed_s = epoch, step_in_epoch, elapsed()
        state.scheduler = scheduler.state_dict()
        keep = {state.best_step} if state.best_step is not None else set()
        path = checkpointing.save_checkpoint(accelerator, output_dir, asdict(state),
                                             save_total_limit=args.save_total_limit, keep_steps=keep)
        logger.debug("saved %s", path)

    # ---- the loop -------------------------------------------------------------------------------------------
    progress = tqdm(total=max_steps, initial=state.global_step, desc="train", dynamic_ncols=True,
                    disable=not accelerator.is_local_main_process)
    stop = state.global_step >= max_steps
    start_epoch, resume_steps = state.epoch, state.step_in_epoch
    for epoch in range(start_epoch, num_epochs):
        if stop:
            break
        train_sampler.set_epoch(epoch)  # the shuffle order of this epoch, the same on every process
        model.train()
        if model_args.freeze_backbone:
            accelerator.unwrap_model(model).vit.eval()  # a linear probe: no dropout, frozen BatchNorm statistics
        skipped = resume_steps * args.gradient_accumulation_steps if epoch == start_epoch else 0
        batches = accelerator.skip_first_batches(train_loader, skipped) if skipped else train_loader
        step_in_epoch = skipped // args.gradient_accumulation_steps
        epoch_finished = due_eval = False
        for batch_index, batch in enumerate(batches, start=skipped):
            reseed_for_batch(args.seed, epoch, batch_index, accelerator.process_index)
            with accelerator.accumulate(model):
                images, targets = augment(batch["pixel_values"], batch["labels"])
                logits = model(pixel_values=images).logits
                loss = compute_loss(logits, targets, args.label_smoothing_factor)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()  # a no-op until the last batch of an accumulation window
                optimizer.zero_grad(set_to_none=True)
            loss = loss.detach()
            loss_sum += loss
            loss_count += 1
            nonfinite |= ~torch.isfinite(loss)
            state.train_samples += batch["labels"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue

            # -- one optimizer step is done --
            if not accelerator.optimizer_step_was_skipped:  # fp16 skips steps with inf gradients
                scheduler.step()
            state.global_step += 1
            step_in_epoch += 1
            progress.update(1)
            last_batch = batch_index + 1 == batches_per_epoch
            stop = state.global_step >= max_steps
            due_eval = args.eval_strategy == "steps" and state.global_step % args.eval_steps == 0
            due_save = bool(args.checkpointing_steps) and state.global_step % args.checkpointing_steps == 0
            due_log = state.global_step % args.logging_steps == 0
            if not (due_log or due_eval or due_save or last_batch or stop):
                continue

            mean_loss, time_up = sync()  # the only host sync of the loop (and the NaN guard)
            if mean_loss is not None:
                lr = max(scheduler.get_last_lr())
                speed = (state.global_step - step_at_start) * total_batch / max(time.time() - run_start, 1e-9)
                progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{speed:.0f}")
                accelerator.log({"train/loss": mean_loss, "train/learning_rate": lr, "train/images_per_s": speed,
                                 "train/epoch": state.global_step / steps_per_epoch}, step=state.global_step)
            if time_up:
                logger.info("max_train_minutes=%s spent at step %d: stopping", args.max_train_minutes,
                            state.global_step)
            stop = stop or time_up
            if last_batch:
                epoch_finished = True
                break  # evaluated and saved below, as the end of the epoch
            if due_eval or stop:
                run_evaluation()
            if due_eval or due_save or stop:
                save(epoch, step_in_epoch)  # mid-epoch: a resume skips the batches of step_in_epoch steps
            if stop:
                break

        if epoch_finished:
            if args.eval_strategy == "epoch" or due_eval or stop:
                run_evaluation()
            save(epoch + 1, 0)
        resume_steps = 0
    progress.close()

    # ---- the product ----------------------------------------------------------------------------------------
    if last_eval_step != state.global_step:  # only when resuming a run that stopped before its last evaluation
        run_evaluation()
    train_runtime = elapsed()
    if args.load_best_model_at_end and state.best_step is not None and state.best_step != state.global_step:
        best_dir = checkpointing.checkpoints_root(output_dir) / f"checkpoint-{state.best_step}"
        checkpointing.load_state_without_pickles(accelerator, best_dir)
        logger.info("exporting the best checkpoint: step %d (%s %.4f)", state.best_step, args.metric_for_best_model,
                    state.best_metric)

    # The reported numbers are those of the saved model as users will run it (from_pretrained, pipeline,
    # `vit-finetune eval`): in float32, without the training autocast, so they reproduce exactly.
    final_model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    validation = evaluate_model(final_model, eval_loader, accelerator, metrics, mean=mean, std=std)
    eval_metrics, report_split, report = validation.metrics, "validation", validation
    logger.info("validation (exported model, float32): %s", format_metrics(eval_metrics))
    test_metrics = None
    if prepared.test is not None:
        test_loader = accelerator.prepare(torch.utils.data.DataLoader(
            BatchReader(prepared.test), batch_size=args.per_device_eval_batch_size, **loader_kwargs))
        report = evaluate_model(final_model, test_loader, accelerator, metrics, mean=mean, std=std)
        test_metrics, report_split = report.metrics, "test"
        logger.info("test (exported model, float32): %s", format_metrics(test_metrics))

    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)  # on every process (FSDP/DeepSpeed gather here)
    results = {
        "eval": {k: eval_metrics[k] for k in ("accuracy", "top5_accuracy", "f1_macro", "loss", "samples")},
        **({"test": test_metrics} if test_metrics is not None else {}),
        "best_metric": args.metric_for_best_model,
        "best_step": state.best_step,
        "epochs": round(state.global_step / steps_per_epoch, 4),
        "global_step": state.global_step,
        "train_runtime_s": round(train_runtime, 2),
        "train_samples_per_second": round(state.train_samples / max(train_runtime, 1e-9), 2),
        "num_processes": accelerator.num_processes,
        "dataset": dataset_name(data_args),
        "base_model": model_args.model_name_or_path,
        "history": state.history,
        "setting_changes": state.setting_changes,
    }
    check_finite_weights(final_model, accelerator, state.global_step, output_dir)
    if main_process:
        from .output_folder import publish_model_folder, staging_dir

        staging = staging_dir(output_dir)
        try:
            write_model_folder(unwrapped, state_dict, accelerator, staging, run_dir, prepared, results, report,
                               report_split, mean, std)
        except Exception as error:  # noqa: BLE001 - safetensors' write error is neither OSError nor RuntimeError
            shutil.rmtree(staging, ignore_errors=True)
            checkpointing.raise_if_disk_full(error, output_dir, "the model folder")
            raise
        publish_model_folder(staging, output_dir)
        logger.info("model folder: %s", output_dir.resolve())
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def dataset_name(data_args: Any) -> str:
    for name in ("dataset_name", "train_dir", "train_file"):
        value = getattr(data_args, name, None)
        if value:
            return str(value)
    return "unknown"


def write_model_folder(model: Any, state_dict: dict, accelerator: Any, output_dir: Path, run_dir: Path,
                       prepared: Any, results: dict, report: Any, report_split: str, mean: list[float],
                       std: list[float]) -> None:
    """Everything docs/CONTRACTS.md lists for a model folder (main process only), into an empty `output_dir`.

    `run_dir` holds this run's training_args.json and data_report.json, copied in.
    """
    from .data import build_image_processor
    from .plots import plot_confusion_matrix, plot_training_curves

    config = model.config
    model.save_pretrained(output_dir, state_dict=state_dict, save_function=accelerator.save)
    build_image_processor(config.image_size, config.num_channels, mean, std).save_pretrained(output_dir)
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    for name in ("training_args.json", "data_report.json"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, output_dir / name)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    plot_confusion_matrix(report.predictions, report.references, labels, output_dir / "confusion_matrix.png",
                          title=report_split)
    plot_training_curves(results["history"], output_dir / "training_curves.png")
    write_examples(prepared.validation, config.id2label, output_dir / "examples")
    try:
        from .model_card import write_model_card
    except ImportError:
        logger.info("the model card writer is not available: README.md not written")
    else:
        write_model_card(output_dir)


def write_examples(dataset: Any, id2label: dict[int, str], folder: Path, limit: int = 10) -> None:
    """One image per class (the first of each, at most `limit` classes) as examples/<label>.png, for the demo."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    labels = dataset.with_format(None)["labels"]
    first: dict[int, int] = {}
    for index, label in enumerate(labels):
        if int(label) not in first and len(first) < limit:
            first[int(label)] = index
    for label, index in sorted(first.items()):
        image = dataset[index]["pixel_values"]  # uint8 (C, H, W)
        array = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
        array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
        name = re.sub(r"[^\w.-]+", "_", str(id2label[label])).strip("._") or f"class_{label}"
        Image.fromarray(array.astype(np.uint8)).save(folder / f"{name}.png")


# ==========================================================================================================
# Entry point
# ==========================================================================================================


def main(argv: list[str] | None = None) -> int:
    """`vit-finetune train` and `python -m vit_finetune.train`: 0 on success, 1 on a failed run, 2 on bad arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        model_args, data_args, args = parse_train_arguments(argv)
    except ConfigError as error:
        print(f"vit-finetune train: error: {error}", file=sys.stderr)
        return 2
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per save/load is noise here
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():
            results = train(model_args, data_args, args)
    except ConfigError as error:
        print(f"vit-finetune train: error: {error}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, DiskFullError) as error:
        print(f"vit-finetune train: error: {error}", file=sys.stderr)
        return 1
    finally:
        _reset_accelerate()
    if rank == 0:
        split = "test" if "test" in results else "eval"
        print(f"{split} accuracy: {100 * results[split]['accuracy']:.2f}% "
              f"({results[split]['samples']} images); model folder: {Path(args.output_dir).resolve()}")
    return 0


def _reset_accelerate() -> None:
    """Forgets Accelerate's process-wide state so that main() can run again in the same process (tests, notebooks)."""
    from accelerate.state import AcceleratorState, GradientState

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


if __name__ == "__main__":
    sys.exit(main())
