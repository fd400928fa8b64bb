"""`DataArguments`: what data to train on and how to augment it (parsed by HfArgumentParser beside
TrainingArguments)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Columns searched, in order, when --image_column_name / --label_column_name are not given.
IMAGE_COLUMN_CANDIDATES = ("image", "img", "pixel_values", "path", "file_name", "filename", "file", "image_path")
LABEL_COLUMN_CANDIDATES = ("label", "labels", "fine_label", "class", "class_name", "category")
AUTO_AUGMENT_POLICIES = ("none", "randaugment", "trivialaugment")


@dataclass
class DataArguments:
    """What data to train on and how to augment it (field names follow transformers' image-classification example).

    Give exactly one source for the training data: `dataset_name`, `train_dir` or `train_file`.
    """

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A Hugging Face Hub dataset id (e.g. 'fashion_mnist'), a local dataset repository folder "
            "(parquet/image files, loaded with the same `datasets.load_dataset` call), or a folder written by "
            "`Dataset.save_to_disk` / `DatasetDict.save_to_disk`."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The configuration (subset) name of `dataset_name`, if it has several."}
    )
    train_split_name: str = field(
        default="train", metadata={"help": "Name of the training split of `dataset_name`."}
    )
    validation_split_name: str | None = field(
        default=None,
        metadata={
            "help": "Name of the validation split of `dataset_name`. Default: the first of "
            "validation/valid/val/dev/eval that exists; if none does, one is carved from training "
            "(see `train_val_split`)."
        },
    )
    test_split_name: str | None = field(
        default=None,
        metadata={"help": "Name of the test split of `dataset_name`. Default: 'test' if it exists, else no test split."},
    )
    train_dir: str | None = field(
        default=None,
        metadata={"help": "A folder with one sub-folder of images per class (the class name is the folder name)."},
    )
    validation_dir: str | None = field(
        default=None, metadata={"help": "Validation images, laid out like `train_dir`."}
    )
    test_dir: str | None = field(default=None, metadata={"help": "Test images, laid out like `train_dir`."})
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "A CSV (.csv/.tsv) or JSON-lines (.json/.jsonl) manifest with an image path column and a label "
            "column; relative paths are relative to the manifest's folder."
        },
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation manifest, like `train_file`."})
    test_file: str | None = field(default=None, metadata={"help": "Test manifest, like `train_file`."})
    image_column_name: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the images (or image paths). Default: the first of "
            + "/".join(IMAGE_COLUMN_CANDIDATES)
            + " that exists."
        },
    )
    label_column_name: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the labels (class ids or names). Default: the first of "
            + "/".join(LABEL_COLUMN_CANDIDATES)
            + " that exists."
        },
    )
    train_val_split: float = field(
        default=0.15,
        metadata={
            "help": "Fraction of the training data held out (stratified by class, seeded) as validation when the "
            "source has no validation split."
        },
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Keep only this many (randomly chosen, seeded) training images; for quick runs."},
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={"help": "Keep only this many (randomly chosen, seeded) validation and test images; for quick runs."},
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes used to decode and resize the images once (datasets' num_proc)."}
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where `datasets` keeps downloaded and preprocessed data (default: HF_DATASETS_CACHE)."},
    )
    overwrite_cache: bool = field(
        default=False, metadata={"help": "Decode and resize again even if a cached result exists."}
    )
    # --- augmentation (applied to whole batches on the training device, see BatchAugmentation) ---
    hflip: bool = field(
        default=True,
        metadata={"help": "Random horizontal flips during training. Turn off for text, digits or other "
                  "orientation-sensitive images (--hflip false)."},
    )
    random_resized_crop_min_scale: float = field(
        default=0.08,
        metadata={
            "help": "Smallest area fraction kept by the training random resized crop (aspect 3/4..4/3). "
            "1.0 turns the crop off; 0.08 is the ImageNet recipe, 0.35-0.5 suits small or centred images."
        },
    )
    auto_augment: str = field(
        default="none",
        metadata={"help": "Per-sample automatic augmentation policy: none, randaugment or trivialaugment."},
    )
    randaugment_num_ops: int = field(
        default=2, metadata={"help": "RandAugment: number of operations applied to each image."}
    )
    randaugment_magnitude: int = field(
        default=9, metadata={"help": "RandAugment: magnitude of every operation, 0..30."}
    )
    random_erasing_prob: float = field(
        default=0.0, metadata={"help": "Probability of erasing a random rectangle of each training image."}
    )
    mixup_alpha: float = field(
        default=0.0, metadata={"help": "Mixup Beta(alpha, alpha) parameter; 0 turns Mixup off (DeiT uses 0.8)."}
    )
    cutmix_alpha: float = field(
        default=0.0, metadata={"help": "CutMix Beta(alpha, alpha) parameter; 0 turns CutMix off (DeiT uses 1.0)."}
    )
    mixup_prob: float = field(
        default=1.0, metadata={"help": "Probability that an image is mixed at all when Mixup or CutMix is on."}
    )
    mixup_switch_prob: float = field(
        default=0.5, metadata={"help": "When both Mixup and CutMix are on, probability of CutMix for a mixed image."}
    )

    def __post_init__(self) -> None:
        self.auto_augment = (self.auto_augment or "none").lower()
        if self.auto_augment not in AUTO_AUGMENT_POLICIES:
            raise ValueError(f"auto_augment must be one of {AUTO_AUGMENT_POLICIES}, got {self.auto_augment!r}")
        if not 0.0 < self.random_resized_crop_min_scale <= 1.0:
            raise ValueError(f"random_resized_crop_min_scale must be in (0, 1], got {self.random_resized_crop_min_scale}")
        if not 0.0 < self.train_val_split < 1.0:
            raise ValueError(f"train_val_split must be in (0, 1), got {self.train_val_split}")
        for name in ("random_erasing_prob", "mixup_prob", "mixup_switch_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.randaugment_magnitude <= 30:
            raise ValueError(f"randaugment_magnitude must be in 0..30, got {self.randaugment_magnitude}")
        for name in ("max_train_samples", "max_eval_samples"):
            # A negative limit would silently drop that many images (a slice [:-5]) and 0 leaves nothing to use.
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or unset for all images), got {getattr(self, name)}")
