"""`--quantize int8`: onnxruntime dynamic quantization of the ONNX export (int8 weights of the matrix products, per
output channel; activations quantized on the fly), with its accuracy change on the model's own test split and its
CPU speed-up, written to `quantization.json`.

Why onnxruntime's and not torch's: on this 2-core CPU it was the faster of the two (ViT-Ti/16, mean pooling,
batch 1: 12.9 ms vs 16.0 ms for `torch.ao.quantization.quantize_dynamic`, float32 onnxruntime 19.1 ms; batch 16:
159 ms vs 192 ms; measured once on a shared machine; `python -m benchmarks.inference --quantizers` repeats it), and
torch's replaces `nn.Linear` by a module whose `weight` is a method, not a tensor, which our attention
(`F.linear(x, self.qkv.weight, ...)`) cannot run: torch's path would need the stock transformers class.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import to_onnx
from .source import Source

FILENAME = "model.int8.onnx"
RECORD = "quantization.json"
SPEED_BATCH = 64
LATENCY_REPEATS = 20
THROUGHPUT_REPEATS = 3
EVAL_BATCH = 256
# Matrix products only. Why: onnxruntime's int8 convolution (ConvInteger) was 4-8x slower than float32 here (the
# recipe's conv stem: batch 64, 215 ms vs 26 ms), so convolutions stay float32.
QUANTIZED_OPS = ("MatMul", "Gemm")


class TestSplitUnavailable(Exception):
    """Why the model's test split cannot be read here (said in quantization.json and the card)."""


@contextlib.contextmanager
def _quiet_root_logger():
    # quantize_dynamic logs a hint about pre-processing on the root logger; measured: no speed difference here.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_file(fp32_path: Path, int8_path: Path) -> None:
    """Dynamic int8 quantization of the MatMul/Gemm weights of an ONNX file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=list(QUANTIZED_OPS))


def _timed_rounds(runs: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds of each run; every round runs each once (order rotating), so load hits them alike."""
    for run in runs.values():
        run()  # warm-up: the first call allocates
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for index in range(repeats):
        for name in names[index % len(names):] + names[:index % len(names)]:
            start = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def measure_speed(sessions: dict[str, Any], image: torch.Tensor, batch_size: int = SPEED_BATCH) -> dict[str, Any]:
    """Batch-1 latency (ms) and batch-`batch_size` throughput (images/s) of each onnxruntime session, on this
    machine's CPU with onnxruntime's default threads."""
    one = image[:1].numpy()
    batch = np.ascontiguousarray(np.repeat(one, batch_size, axis=0))
    latency = _timed_rounds({name: (lambda s=s: to_onnx.run(s, one)) for name, s in sessions.items()},
                            LATENCY_REPEATS)
    throughput = _timed_rounds({name: (lambda s=s: to_onnx.run(s, batch)) for name, s in sessions.items()},
                               THROUGHPUT_REPEATS)
    result: dict[str, Any] = {
        name: {"batch_1_latency_ms": round(1000 * latency[name], 3),
               f"batch_{batch_size}_images_per_s": round(batch_size / throughput[name], 1)}
        for name in sessions
    }
    result["speedup"] = {"batch_1": round(latency["float32"] / latency["int8"], 3),
                         f"batch_{batch_size}": round(throughput["float32"] / throughput["int8"], 3)}
    result["machine"] = {"cpus": os.cpu_count(), "threads": "onnxruntime default",
                         "method": f"median of {LATENCY_REPEATS} (batch 1) and {THROUGHPUT_REPEATS} "
                                   f"(batch {batch_size}) interleaved runs after a warm-up"}
    return result


def test_split(source: Source, test_dir: str | None, work_dir: Path, max_samples: int | None):
    """(the model's test split, prepared as for training: uint8 pixels at the model's resolution, the model's label
    ids; where it came from). Raises TestSplitUnavailable saying why it cannot be had here."""
    from ..data import DataArguments, DataError, prepare_datasets, prepare_image_folder

    config = source.model.config
    label2id = {str(name): int(i) for name, i in config.label2id.items()}
    args = source.read_json("training_args.json") or {}
    folder = test_dir or args.get("test_dir")
    try:
        if folder:
            if not Path(folder).is_dir():
                where = "--test_dir" if test_dir else f"{source.name}/training_args.json's test_dir"
                raise TestSplitUnavailable(f"{where} {folder} is not a folder here (pass --test_dir)")
            dataset, _ = prepare_image_folder(str(folder), label2id=label2id, image_size=config.image_size,
                                              num_channels=config.num_channels, output_dir=str(work_dir),
                                              split="test", cache_dir=args.get("cache_dir"))
            origin = f"test_dir {Path(folder).name}"
        elif args.get("dataset_name"):
            fields = {key: value for key, value in args.items() if key in DataArguments.__dataclass_fields__}
            prepared = prepare_datasets(DataArguments(**fields), image_size=config.image_size,
                                        num_channels=config.num_channels, output_dir=str(work_dir),
                                        seed=args.get("seed", 42), main_process_first=contextlib.nullcontext)
            if prepared.test is None:
                raise TestSplitUnavailable(f"the dataset {args['dataset_name']} has no test split")
            from ..evaluate import remap_labels

            dataset = remap_labels(prepared.test, {int(k): v for k, v in prepared.id2label.items()}, label2id)
            origin = f"the test split of {args['dataset_name']}"
        elif args:
            raise TestSplitUnavailable("the model was trained without a test split (training_args.json has no "
                                       "test_dir or dataset_name); pass --test_dir")
        else:
            raise TestSplitUnavailable(f"{source.name} has no training_args.json saying what its test split is; "
                                       "pass --test_dir")
    except (DataError, ValueError, OSError) as error:
        raise TestSplitUnavailable(f"the test split could not be read: {error}") from error
    if max_samples and len(dataset) > max_samples:
        dataset = dataset.select(range(max_samples))
        origin += f" (first {max_samples} images)"
    return dataset, origin


def evaluate_sessions(sessions: dict[str, Any], dataset: Any, mean: list[float], std: list[float]
                      ) -> dict[str, dict[str, float | int]]:
    """Our metrics (`evaluation.MetricSuite`) of each onnxruntime session on a prepared split, plus how many
    top-1 predictions int8 changes."""
    from ..data import normalize
    from ..evaluation import TOP_K, MetricSuite
    from ..modeling_vit import classification_loss

    metrics = MetricSuite()
    ranked: dict[str, list] = {name: [] for name in sessions}
    losses: dict[str, list] = {name: [] for name in sessions}
    references = []
    for start in range(0, len(dataset), EVAL_BATCH):
        batch = dataset[start:start + EVAL_BATCH]
        images = normalize(batch["pixel_values"], mean, std)
        if images.shape[1] == 1:  # the graph takes the processor's RGB (see to_onnx)
            images = images.expand(-1, 3, -1, -1)
        references.append(batch["labels"])
        for name, onnx_session in sessions.items():
            logits = torch.from_numpy(to_onnx.run(onnx_session, images))
            ranked[name].append(logits.topk(min(TOP_K, logits.shape[-1]), dim=-1).indices)
            losses[name].append(classification_loss(logits, batch["labels"], "single_label_classification",
                                                    reduction="none"))
    labels = torch.cat(references).numpy()
    results = {name: metrics.compute(torch.cat(ranked[name]).numpy(), labels, torch.cat(losses[name]).numpy())
               for name in sessions}
    changed = int((torch.cat(ranked["float32"])[:, 0] != torch.cat(ranked["int8"])[:, 0]).sum())
    results["int8"]["top1_changed_vs_float32"] = changed
    return results


def quantize_export(source: Source, output_dir: Path, *, test_dir: str | None = None,
                    max_test_samples: int | None = None) -> dict[str, Any]:
    """model.int8.onnx beside model.onnx, its accuracy on the test split and its speed-up; the record is written
    to quantization.json and returned."""
    import json

    fp32_path, int8_path = output_dir / to_onnx.FILENAME, output_dir / FILENAME
    quantize_file(fp32_path, int8_path)
    sessions = {"float32": to_onnx.session(fp32_path), "int8": to_onnx.session(int8_path)}
    pixels, probe = source.probe()
    record: dict[str, Any] = {
        "method": "onnxruntime.quantization.quantize_dynamic(weight_type=QInt8, per_channel=True, op_types_to_quantize="
                  f"{list(QUANTIZED_OPS)})",
        "file": FILENAME,
        "size_mb": {"float32": round(fp32_path.stat().st_size / 1e6, 2), "int8": round(int8_path.stat().st_size / 1e6, 2)},
    }
    metrics = source.read_json("metrics.json") or {}
    with tempfile.TemporaryDirectory() as work_dir:
        try:
            dataset, origin = test_split(source, test_dir, Path(work_dir), max_test_samples)
            results = evaluate_sessions(sessions, dataset, list(source.processor.image_mean),
                                        list(source.processor.image_std))
            record["test_split"] = {
                "available": True, "source": origin, **results,
                "accuracy_change": results["int8"]["accuracy"] - results["float32"]["accuracy"],
                "recorded_test_accuracy": (metrics.get("test") or {}).get("accuracy"),
            }
        except TestSplitUnavailable as reason:
            record["test_split"] = {"available": False, "reason": str(reason)}
    record["speed"] = measure_speed(sessions, pixels)
    (output_dir / RECORD).write_text(json.dumps(record, indent=2))
    return record
