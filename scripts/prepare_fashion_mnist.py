#!/usr/bin/env python
"""Write Fashion-MNIST as PNG folders (`train/<class>/*.png`, `test/<class>/*.png`).

The benchmark then loads it exactly like a user's own image folders (`--train_dir out/train --test_dir out/test`).

Source: the four IDX .gz files, by default from Debian's `dataset-fashion-mnist` package
(`apt-get install dataset-fashion-mnist` -> /usr/share/datasets/fashion-mnist), or any folder holding them, or
downloaded from Zalando's mirror with `--download` when the machine is online.

Idempotent: a finished output folder holds `.complete.json`; running again does nothing unless `--force`.

    python scripts/prepare_fashion_mnist.py --output_dir data/fashion_mnist
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

DEFAULT_SOURCE = "/usr/share/datasets/fashion-mnist"
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Folder names (file-system safe) in label order, from the Fashion-MNIST README.
CLASS_NAMES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
MARKER = ".complete.json"


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (.gz or raw): a big-endian magic number whose last byte is the number of dimensions,
    one big-endian uint32 per dimension, then the uint8 data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} values for shape {shape}, found {array.size}")
    return array.reshape(shape)


def find_sources(source_dir: str, download: bool) -> dict[str, tuple[str, str]]:
    paths = {}
    for split, names in FILES.items():
        found = []
        for name in names:
            candidates = [os.path.join(source_dir, name), os.path.join(source_dir, name[:-3])]
            existing = next((c for c in candidates if os.path.isfile(c)), None)
            if existing is None and download:
                os.makedirs(source_dir, exist_ok=True)
                existing = os.path.join(source_dir, name)
                print(f"downloading {MIRROR + name}")
                urllib.request.urlretrieve(MIRROR + name, existing)
            if existing is None:
                raise SystemExit(
                    f"{os.path.join(source_dir, name)} not found. Install Debian's dataset-fashion-mnist package "
                    f"(apt-get install dataset-fashion-mnist), point --source_dir at the IDX files, or pass --download."
                )
            found.append(existing)
        paths[split] = (found[0], found[1])
    return paths


def _write_chunk(job: tuple[str, np.ndarray, np.ndarray, int]) -> int:
    folder, images, labels, start = job
    for offset, (image, label) in enumerate(zip(images, labels)):
        # compress_level=1: these 28x28 PNGs are tiny anyway; level 1 is several times faster to write than 6.
        Image.fromarray(image, "L").save(
            os.path.join(folder, CLASS_NAMES[label], f"{start + offset:05d}.png"), compress_level=1
        )
    return len(images)


def write_split(images: np.ndarray, labels: np.ndarray, folder: str, workers: int) -> None:
    for name in CLASS_NAMES:
        os.makedirs(os.path.join(folder, name), exist_ok=True)
    chunk = 2000
    jobs = [(folder, images[i : i + chunk], labels[i : i + chunk], i) for i in range(0, len(images), chunk)]
    if workers <= 1:
        for job in jobs:
            _write_chunk(job)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_chunk, jobs))


def prepare(output_dir: str, source_dir: str = DEFAULT_SOURCE, force: bool = False, download: bool = False,
            workers: int | None = None, limit: int | None = None) -> dict:
    """Write the PNG folders (unless already complete) and return the marker's content."""
    marker_path = os.path.join(output_dir, MARKER)
    if os.path.isfile(marker_path) and not force:
        with open(marker_path, encoding="utf-8") as handle:
            info = json.load(handle)
        if info.get("limit") == limit:
            print(f"{output_dir} already holds Fashion-MNIST ({info['counts']}); use --force to rewrite it")
            return info
    sources = find_sources(source_dir, download)
    started = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    counts = {}
    for split, (images_path, labels_path) in sources.items():
        images, labels = read_idx(images_path), read_idx(labels_path)
        if len(images) != len(labels):
            raise SystemExit(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
        if labels.max() >= len(CLASS_NAMES):
            raise SystemExit(f"{labels_path}: label {labels.max()} is not a Fashion-MNIST class")
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        folder = os.path.join(output_dir, split)
        # A half-written folder from an interrupted run (no marker) is rewritten from scratch.
        shutil.rmtree(folder, ignore_errors=True)
        write_split(images, labels, folder, workers)
        counts[split] = int(len(images))
    info = {"counts": counts, "classes": CLASS_NAMES, "limit": limit, "source": source_dir,
            "seconds": round(time.perf_counter() - started, 2)}
    with open(marker_path, "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2)
    print(f"wrote {counts} PNGs to {output_dir} in {info['seconds']} s")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="data/fashion_mnist", help="where train/ and test/ are written")
    parser.add_argument("--source_dir", default=DEFAULT_SOURCE, help="folder with the four IDX .gz files")
    parser.add_argument("--download", action="store_true", help="download missing IDX files into --source_dir")
    parser.add_argument("--force", action="store_true", help="rewrite even if the output is already complete")
    parser.add_argument("--workers", type=int, default=None, help="processes writing PNGs (default: all cores)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images of each split (for tests)")
    args = parser.parse_args(argv)
    prepare(args.output_dir, args.source_dir, args.force, args.download, args.workers, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
