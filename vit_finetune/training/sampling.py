"""The order of the batches and the randomness of each, as functions of where they are in training.

Accelerate saves no shuffle order in its checkpoints. Here the order of epoch e is a pure function of (seed, e)
(`EpochSampler`) and every batch reseeds torch's RNG from (seed, epoch, batch index, process) before its
augmentation and forward pass (`reseed_for_batch`), so mixup, crops, dropout and stochastic depth draw the same
numbers whether or not a run was interrupted and resumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffles each epoch with a generator seeded from (seed, epoch) and nothing else.

    With this sampler the order of any epoch can be recomputed, so a resumed run sees exactly the batches an
    uninterrupted one would.
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


class BalancedSampler(EpochSampler):
    """`--sampler balanced`: each epoch draws `num_samples` images with replacement, image i with probability
    proportional to 1 / (images of its class), so every class is drawn about equally often.

    The draw of epoch e uses a generator seeded from (seed, e) alone, like EpochSampler's shuffle: a resumed run
    draws the same images in the same order.
    """

    def __init__(self, labels: Any, seed: int):
        labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        super().__init__(len(labels), seed)
        counts = torch.bincount(labels).double()
        self.weights = (1.0 / counts)[labels]

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist()


def reseed_for_batch(seed: int, epoch: int, batch_index: int, process_index: int) -> None:
    """Makes the randomness of one batch (augmentation, dropout, drop path) a function of where it is in training."""
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, batch_index, process_index]).generate_state(1)[0]))


def batch_loader(split: Any, batch_size: int, num_workers: int, sampler: EpochSampler | None = None) -> Any:
    """A DataLoader of whole uint8 batches of a prepared split (in order unless a sampler is given).

    `BatchReader` reads a batch from the Arrow table in one call: datasets' row-by-row formatting cost ~10% of
    the Fashion-MNIST recipe's step.
    """
    from ..data import BatchReader, keep_batch

    return torch.utils.data.DataLoader(
        BatchReader(split), batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0, collate_fn=keep_batch,
    )
