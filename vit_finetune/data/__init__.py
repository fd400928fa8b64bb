"""The data pipeline: load any image dataset through `datasets`, decode robustly, preprocess once, augment in batches.

The flow, for newcomers, one module per step:

1. **Arguments** (`arguments.py`, `DataArguments`): the source, columns, splits, sample limits and augmentation.
2. **Sources** (`sources.py`, `load_raw_splits`): a Hub id / local dataset repository / `save_to_disk` folder
   (`--dataset_name`), class-per-sub-folder directories (`--train_dir` ...), or CSV / JSON-lines manifests of
   `path,label` (`--train_file` ...).
3. **Decoding** (`decode.py`, `load_image`): the one image decoder of training, eval, predict and the demo. Every
   PIL mode becomes RGB (or L for 1-channel models); bad files raise `BadImageError`.
4. **Preprocess once** (`preprocess.py`, `prepare.py`: `prepare_datasets`, `prepare_image_folder`): decode + resize
   to the model resolution a single time with `datasets.map`; the result is uint8 Arrow on disk, memory-mapped,
   reused from the fingerprint cache next run. Bad files become skipped rows listed in `data_report.json`
   (`report.py`) instead of a crashed run.
5. **Read in batches** (`loaders.py`, `BatchReader`): the training loop's loaders copy a batch's rows out of the
   memory-mapped Arrow file in one go (datasets' own list indexing converts row by row, ~30x slower for small
   images).
6. **Augment in batches** (`augment.py`, `BatchAugmentation`): random resized crop, flip, RandAugment /
   TrivialAugment, random erasing and Mixup / CutMix on whole uint8 batches on the training device, with
   per-sample random parameters drawn from torch's global RNG (so seeded runs reproduce and resume exactly).
7. **Normalise** (`processor.py`, `normalize`), and save an image processor (`build_image_processor`) beside every
   model so that `transformers.pipeline("image-classification", model=folder)` preprocesses like our evaluation.

All stored images are resized straight to `image_size x image_size` (bilinear, no crop), which is exactly what
`ViTImageProcessor` does, so evaluation, `predict` and the transformers pipeline see the same pixels; the
training-time random resized crop adds the scale/aspect variation.
"""

from .arguments import AUTO_AUGMENT_POLICIES, DataArguments
from .augment import BatchAugmentation, MixupCutmix, PerSampleAutoAugment
from .decode import BadImageError, check_num_channels, load_image
from .loaders import BatchReader, keep_batch
from .prepare import PreparedData, prepare_datasets, prepare_image_folder
from .preprocess import preprocess_image
from .processor import build_image_processor, normalize
from .report import REPORT_FILENAME
from .sources import DataError, load_raw_splits

__all__ = [
    "AUTO_AUGMENT_POLICIES",
    "BadImageError",
    "BatchAugmentation",
    "BatchReader",
    "DataArguments",
    "DataError",
    "MixupCutmix",
    "PerSampleAutoAugment",
    "PreparedData",
    "REPORT_FILENAME",
    "build_image_processor",
    "check_num_channels",
    "keep_batch",
    "load_image",
    "load_raw_splits",
    "normalize",
    "prepare_datasets",
    "prepare_image_folder",
    "preprocess_image",
]
