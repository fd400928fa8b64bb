"""The arguments of `vit-finetune train`: the model to start from, the data (`vit_finetune.data.DataArguments`) and
how to train, filled by `vit_finetune.arguments.parse_arguments` from a YAML file and flags.

The architecture options are not written out here: they are `ViTConfig.__init__`'s parameters, with their types
from its signature and their help from its docstring, so a new model option appears in `--help`, in YAML files
and in `training_args.json` by being added to ViTConfig alone.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
import typing
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..arguments import ConfigError, check_finite, parse_arguments
from ..configuration_vit import ViTConfig

MIXED_PRECISIONS = ("no", "bf16", "fp16")
EVAL_STRATEGIES = ("no", "epoch", "steps")
BEST_METRICS = ("accuracy", "top5_accuracy", "f1_macro", "loss")
FINETUNE_METHODS = ("full", "linear_probe", "lora")
LORA_TARGET_MODULES = ("attention.qkv", "attention.proj")
SAMPLERS = ("random", "balanced")
CLASS_WEIGHTS = ("none", "balanced")
TRACKERS = ("none", "all", "tensorboard", "trackio", "wandb", "comet_ml", "mlflow", "aim", "clearml", "dvclive")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")


# ----------------------------------------------------------------------------------------------------------
# The model: where it comes from, its architecture (ViTConfig's parameters), and how it is trained


def _documented_parameters(config_class: type) -> dict[str, str]:
    """`name: text` of each entry of the class docstring's Args section (continuation lines indented 12)."""
    doc = config_class.__doc__ or ""
    if "Args:\n" not in doc:
        raise TypeError(f"{config_class.__name__}'s docstring has no Args section")
    section = doc.split("Args:\n", 1)[1]
    entries = re.findall(r"^ {8}(\w+): (.*(?:\n {12}.*)*)", section, re.MULTILINE)
    return {name: " ".join(text.split()) for name, text in entries}


def architecture_options(config_class: type) -> list[tuple[str, Any, Any]]:
    """(name, type, dataclass field) of each parameter of `config_class.__init__`, all Optional with default None.

    None means "not set": the config's default from scratch, the pretrained model's own value otherwise, so
    only what a user wrote overrides anything. Raises TypeError for a parameter the docstring does not document.
    """
    parameters = [p for p in inspect.signature(config_class.__init__).parameters.values()
                  if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    types = typing.get_type_hints(config_class.__init__)
    helps = _documented_parameters(config_class)
    undocumented = [p.name for p in parameters if p.name not in helps]
    if undocumented:
        raise TypeError(f"{config_class.__name__}'s docstring does not document {', '.join(undocumented)}: every "
                        "parameter is a command-line option and needs its help text there")
    fields = []
    for parameter in parameters:
        if parameter.name in config_class.pretrained_overridable:
            unset = f"Unset: {parameter.default} from scratch, else the pretrained model's value."
        else:
            unset = f"Unset: {parameter.default}. From scratch only (pretrained weights fix it)."
        # argparse %-formats help strings: a literal % must be doubled.
        text = f"{helps[parameter.name]} {unset}".replace("%", "%%")
        fields.append((parameter.name, types[parameter.name] | None, field(default=None, metadata={"help": text})))
    return fields


class _ModelArgumentsMethods:
    """The behaviour of ModelArguments (its fields are built from ViTConfig below)."""

    @classmethod
    def architecture_fields(cls) -> tuple[str, ...]:
        """The ViTConfig fields a run may set from the command line or YAML."""
        return ARCHITECTURE_FIELD_NAMES

    def architecture_overrides(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELD_NAMES if getattr(self, name) is not None}

    def __post_init__(self) -> None:
        check_finite(self)
        overrides = self.architecture_overrides()
        allowed = ViTConfig.pretrained_overridable
        if self.model_name_or_path:
            fixed = sorted(set(overrides) - set(allowed))
            if fixed:
                raise ConfigError(f"{', '.join(fixed)} cannot change when starting from pretrained weights "
                                  f"({self.model_name_or_path}); only {', '.join(allowed)} can")
        else:
            ViTConfig(**overrides)  # validates the architecture now (errors name the field), not after data loading
        if (self.image_mean is None) != (self.image_std is None):
            raise ConfigError("image_mean and image_std go together: give both or neither")
        if self.image_std is not None and any(s <= 0 for s in self.image_std):
            raise ConfigError(f"image_std must be positive, got {self.image_std}")
        self._check_finetune_method()

    def _check_finetune_method(self) -> None:
        if self.finetune not in FINETUNE_METHODS:
            raise ConfigError(f"finetune must be one of {', '.join(FINETUNE_METHODS)}; got {self.finetune!r}")
        if self.freeze_backbone:  # the older flag: a linear probe by another name
            if self.finetune == "lora":
                raise ConfigError("freeze_backbone (a linear probe) and finetune lora contradict each other: "
                                  "choose one --finetune method")
            self.finetune = "linear_probe"
        self.freeze_backbone = self.finetune == "linear_probe"  # so training_args.json says it both ways
        if self.finetune != "lora":
            return
        if not self.model_name_or_path:
            raise ConfigError("finetune lora adapts pretrained weights: it needs model_name_or_path (from scratch, "
                              "use --finetune full)")
        if self.lora_r < 1 or self.lora_alpha <= 0:
            raise ConfigError(f"lora_r must be >= 1 and lora_alpha > 0, got {self.lora_r} and {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_target_modules:
            raise ConfigError("lora_target_modules is empty: name at least one module (e.g. attention.qkv)")


_SOURCE_FIELDS = [
    ("model_name_or_path", str | None, field(
        default=None,
        metadata={"help": "Start from these weights: a folder written by vit-finetune, a transformers ViT folder or "
                  "Hub id (google/vit-base-patch16-224-in21k), or timm/<name>. Empty: train from scratch."})),
    ("model_revision", str | None, field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})),
]
_HOW_TO_TRAIN_FIELDS = [
    ("finetune", str, field(
        default="full", metadata={"help": f"Which weights train: {', '.join(FINETUNE_METHODS)}. full: all of them; "
                                  "linear_probe: the classification head alone; lora: low-rank adapters (peft) on "
                                  "--lora_target_modules plus the head in full (needs model_name_or_path)."})),
    ("freeze_backbone", bool, field(
        default=False, metadata={"help": "Older name of --finetune linear_probe (train only the classification "
                                 "head); true sets finetune to linear_probe."})),
    ("lora_r", int, field(default=16, metadata={"help": "LoRA rank (--finetune lora)."})),
    ("lora_alpha", int, field(
        default=16, metadata={"help": "LoRA scaling numerator: the update is scaled by lora_alpha / lora_r."})),
    ("lora_dropout", float, field(default=0.1, metadata={"help": "Dropout on the LoRA branch's input."})),
    ("lora_target_modules", list[str], field(
        default_factory=lambda: list(LORA_TARGET_MODULES),
        metadata={"help": "Modules that get LoRA adapters, by the end of their name (default: the fused qkv and the "
                  "attention output projection; e.g. add mlp.fc1 mlp.fc2)."})),
    ("lora_modules_to_save", list[str], field(
        default_factory=lambda: ["classifier"],
        metadata={"help": "Modules trained in full beside the adapters and saved with them (default: the new "
                  "classification head)."})),
    ("merge_lora", bool, field(
        default=True, metadata={"help": "With --finetune lora, also write the model with the adapters merged into "
                                "its weights (a plain model folder); the adapter alone goes to adapter/. "
                                "--no_merge_lora: the output folder holds the adapter only."})),
    ("image_mean", list[float] | None, field(
        default=None, metadata={"help": "Normalisation mean per channel (default: the source model's, else 0.5)."})),
    ("image_std", list[float] | None, field(
        default=None, metadata={"help": "Normalisation std per channel (default: the source model's, else 0.5)."})),
]
_ARCHITECTURE = architecture_options(ViTConfig)
ARCHITECTURE_FIELD_NAMES = tuple(name for name, _, _ in _ARCHITECTURE)

# HfArgumentParser reads dataclass fields: build the class from the three lists rather than restating ViTConfig.
ModelArguments = dataclasses.make_dataclass(
    "ModelArguments", [*_SOURCE_FIELDS, *_ARCHITECTURE, *_HOW_TO_TRAIN_FIELDS], bases=(_ModelArgumentsMethods,),
    namespace={"__doc__": "Which model to start from. With no `model_name_or_path` a new ViT is built from the "
               "architecture fields (ViTConfig's parameters); with one, only `ViTConfig.pretrained_overridable` "
               "may change."},
)
ModelArguments.__module__ = __name__  # make_dataclass names its caller's caller (Python < 3.12 takes no module=)


# ----------------------------------------------------------------------------------------------------------
# How to train


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
    # Fine-tuning methods (docs/finetuning.md)
    freeze_epochs: int = field(
        default=0, metadata={"help": "Staged unfreezing: train the head alone for N epochs, then everything, each "
                             "stage with its own warm-up and decay (--finetune full only)."})
    ema_decay: float | None = field(
        default=None, metadata={"help": "Keep an exponential moving average of the weights with this decay "
                                "(e.g. 0.9998, timm's ModelEmaV3); it is evaluated beside the raw weights and the "
                                "better one is exported."})
    ema_warmup: bool = field(
        default=True, metadata={"help": "Warm the EMA decay up from 0 (1 - (1 + step)^-2/3, capped at ema_decay), "
                                "so early weights are not averaged in for long."})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without metric_for_best_model "
                                "improving by more than early_stopping_threshold."})
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "How much metric_for_best_model must improve to reset the patience."})
    class_weights: str = field(
        default="none", metadata={"help": "none, or balanced: weight the training loss of each class by "
                                  "n / (classes * n_class) (inverse frequency)."})
    sampler: str = field(
        default="random", metadata={"help": "random (each image once per epoch), or balanced: draw images with "
                                    "probability inversely proportional to their class's frequency."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute each block's activations in the backward pass: less memory, "
                                 "about a third more compute."})
    torch_compile: bool = field(
        default=False, metadata={"help": "Compile the model with torch.compile (inductor); off by default (slower "
                                 "on the CPU, measured)."})

    def __post_init__(self) -> None:
        check_finite(self)
        if not self.output_dir:
            raise ConfigError("output_dir is required")
        self._check_ranges()
        choices = {"lr_scheduler_type": SCHEDULERS, "eval_strategy": EVAL_STRATEGIES,
                   "metric_for_best_model": BEST_METRICS, "sampler": SAMPLERS, "class_weights": CLASS_WEIGHTS}
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

    def _check_ranges(self) -> None:
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
        if self.freeze_epochs < 0:
            raise ConfigError(f"freeze_epochs must be >= 0, got {self.freeze_epochs}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise ConfigError(f"early_stopping_patience must be >= 1, got {self.early_stopping_patience}")
            if self.eval_strategy == "no":
                raise ConfigError("early_stopping_patience counts evaluations: it needs eval_strategy epoch or steps")
        if self.early_stopping_threshold < 0:
            raise ConfigError(f"early_stopping_threshold must be >= 0, got {self.early_stopping_threshold}")

    def trackers(self) -> list[str]:
        return [t.strip() for t in (self.report_to or "none").split(",") if t.strip()]


# ----------------------------------------------------------------------------------------------------------


def parse_train_arguments(argv: list[str]) -> tuple[Any, Any, TrainingArguments]:
    """(ModelArguments, DataArguments, TrainingArguments) from `--config FILE` and flags; ConfigError if bad."""
    from ..data import DataArguments

    try:
        model_args, data_args, args = parse_arguments(argv, (ModelArguments, DataArguments, TrainingArguments))
    except ConfigError:
        raise
    except ValueError as error:  # a dataclass __post_init__ (data arguments, ViTConfig) rejected a value
        raise ConfigError(str(error)) from error
    if args.freeze_epochs and model_args.finetune != "full":
        raise ConfigError(f"freeze_epochs trains the head alone, then everything: it needs --finetune full, not "
                          f"{model_args.finetune}")
    return model_args, data_args, args


def resolved_arguments(*groups: Any) -> dict[str, Any]:
    """All arguments as one flat dict: what `--config` accepts, so a run can be repeated from it."""
    merged: dict[str, Any] = {}
    for group in groups:
        merged.update(asdict(group))
    return merged
