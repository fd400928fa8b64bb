"""Model benchmark: vit-finetune's ViT against transformers' and timm's, same shapes, one process.

For each shape (ViT-Ti/16 at 224, ViT-S/16 at 224, the Fashion-MNIST recipe's shape) and each dtype
(float32, bfloat16 autocast) it measures images/s of inference (forward under `torch.inference_mode`) and of a
full training step (forward, cross-entropy, backward, AdamW), the FLOP utilisation against the machine's
measured matmul peak, and the peak memory the step allocates. Models are timed interleaved (round-robin
inside every repeat) and the median of the repeats is kept, so a neighbour's load hits every model alike:
read the ratios, not the absolute figures. From the repository root:

    python -m benchmarks.models                              # everything (about 15 minutes on 2 cores)
    python -m benchmarks.models --shapes fmnist --repeats 3 --out outputs/benchmark
    python -m benchmarks.models --help

Writes `models.md`, `models.json` and `models.png` (a bar chart of the ratios) to `--out`.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------------
# Shapes and models


@dataclass(frozen=True)
class Shape:
    name: str
    image_size: int
    patch_size: int
    num_channels: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    num_labels: int
    batch_size: int
    # Extra ViTConfig fields for our model only (the recipe's conv stem, pooling, positions); peers get the
    # same transformer with a plain patch embedding.
    ours_extra: dict = field(default_factory=dict)
    note: str = ""
    # A recent backbone family every model is built as (ours with the options its importer sets, transformers'
    # own class for it, timm's model of it): "vit" (the original), "dinov2" or "siglip". See FAMILY_OPTIONS.
    family: str = "vit"

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + (0 if self.family == "siglip" else 1)


SHAPES: dict[str, Shape] = {
    "vit-ti16-224": Shape("vit-ti16-224", 224, 16, 3, 192, 12, 3, 768, 1000, 32),
    "vit-s16-224": Shape("vit-s16-224", 224, 16, 3, 384, 12, 6, 1536, 1000, 16),
    "fmnist": Shape(
        "fmnist", 32, 8, 1, 128, 4, 4, 256, 10, 128,
        ours_extra=dict(patch_embedding="conv", conv_stem_channels=32, conv_stem_depth=3, pooling="mean",
                        position_embedding="sincos"),
        note="the recipe (configs/fashion_mnist.yaml): ours with its conv stem (3 stages of 3 convolutions), mean "
             "pooling and sin-cos positions; peers and ours-plain with a plain 8x8 patch embedding (same transformer)",
    ),
    "dinov2-s14-224": Shape(
        "dinov2-s14-224", 224, 14, 3, 384, 12, 6, 1536, 1000, 16, family="dinov2",
        note="DINOv2-S/14 at 224 (LayerScale): ours as imported from transformers' Dinov2ForImageClassification "
             "(CLS + patch-mean head), hf = that class, timm = vit_small_patch14_dinov2 (CLS head)",
    ),
    "siglip-b16-224": Shape(
        "siglip-b16-224", 224, 16, 3, 768, 12, 12, 3072, 1000, 8, family="siglip",
        note="SigLIP-B/16 at 224 (no CLS token, attention-pooling head, tanh GELU): hf = SiglipVisionModel with a "
             "linear head on its pooled output, timm = vit_base_patch16_siglip_224 with act_layer='gelu_tanh' (its "
             "default is the exact GELU, ~4x cheaper on this CPU, which is not SigLIP's)",
    ),
}

# Our ViTConfig options for each family, as its importer (vit_finetune/convert) sets them.
FAMILY_OPTIONS = {
    "vit": {},
    "dinov2": dict(layerscale_init=1e-5, pooling="cls_mean", layer_norm_eps=1e-6),
    "siglip": dict(class_token=False, class_position_embedding=False, pooling="map", hidden_act="gelu_pytorch_tanh",
                   layer_norm_eps=1e-6),
}


class WithLinearHead(torch.nn.Module):
    """A transformers backbone with a linear head on its pooled output (SigLIP's vision tower has no classifier
    with the attention-pooling head)."""

    def __init__(self, backbone: torch.nn.Module, width: int, num_labels: int):
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(width, num_labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixel_values=pixel_values).pooler_output)


def build_family_peer(name: str, shape: Shape) -> torch.nn.Module:
    """transformers' or timm's own model of a recent family, random-initialised with `shape`."""
    if name == "timm":
        import timm

        timm_name = {"dinov2": "vit_small_patch14_dinov2", "siglip": "vit_base_patch16_siglip_224"}[shape.family]
        # timm builds its SigLIP-B with the exact (erf) GELU; SigLIP's is the tanh approximation (transformers'
        # gelu_pytorch_tanh, timm's so400m models), which torch computes ~4x slower on the CPU: give timm the same.
        extra = dict(act_layer="gelu_tanh") if shape.family == "siglip" else {}
        return timm.create_model(timm_name, pretrained=False, img_size=shape.image_size, num_classes=shape.num_labels,
                                 **extra)
    implementation = name.removeprefix("hf-")
    sizes = dict(image_size=shape.image_size, patch_size=shape.patch_size, num_channels=shape.num_channels,
                 hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers,
                 num_attention_heads=shape.num_heads)
    if shape.family == "dinov2":
        from transformers import Dinov2Config, Dinov2ForImageClassification

        config = Dinov2Config(**sizes, mlp_ratio=shape.intermediate_size // shape.hidden_size, layerscale_value=1e-5,
                              num_labels=shape.num_labels, attn_implementation=implementation)
        return Dinov2ForImageClassification(config)
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(**sizes, intermediate_size=shape.intermediate_size, attn_implementation=implementation)
    return WithLinearHead(SiglipVisionModel(config), shape.hidden_size, shape.num_labels)

MODELS = ("ours", "hf-sdpa", "hf-eager", "timm")
# "ours-plain": our model with exactly the peers' architecture (plain patch embedding, learned positions,
# CLS pooling), for shapes where "ours" uses the recipe's extras.
EXTRA_MODELS = ("ours-plain",)


def build_model(name: str, shape: Shape) -> torch.nn.Module:
    """One classifier of `shape`; every model gets the same initialisation style (fresh, random)."""
    if name in ("ours", "ours-plain"):
        from vit_finetune import ViTConfig, ViTForImageClassification

        extra = {**FAMILY_OPTIONS[shape.family], **(shape.ours_extra if name == "ours" else {})}
        config = ViTConfig(
            image_size=shape.image_size, patch_size=shape.patch_size, num_channels=shape.num_channels,
            hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers,
            num_attention_heads=shape.num_heads, intermediate_size=shape.intermediate_size,
            num_labels=shape.num_labels, **extra,
        )
        return ViTForImageClassification(config)
    if shape.family != "vit" and name in MODELS:
        return build_family_peer(name, shape)
    if name.startswith("hf-"):
        from transformers import ViTConfig as HFConfig, ViTForImageClassification as HFViT

        config = HFConfig(
            image_size=shape.image_size, patch_size=shape.patch_size, num_channels=shape.num_channels,
            hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers,
            num_attention_heads=shape.num_heads, intermediate_size=shape.intermediate_size,
            num_labels=shape.num_labels, attn_implementation=name.removeprefix("hf-"),
        )
        return HFViT(config)
    if name == "timm":
        from timm.models.vision_transformer import VisionTransformer

        pool = "avg" if shape.ours_extra.get("pooling") == "mean" else "token"
        return VisionTransformer(
            img_size=shape.image_size, patch_size=shape.patch_size, in_chans=shape.num_channels,
            num_classes=shape.num_labels, embed_dim=shape.hidden_size, depth=shape.num_layers,
            num_heads=shape.num_heads, mlp_ratio=shape.intermediate_size / shape.hidden_size,
            global_pool=pool,
        )
    raise ValueError(f"unknown model {name!r}; choose from {MODELS + EXTRA_MODELS}")


def logits_of(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.logits


# ----------------------------------------------------------------------------------------------------------
# FLOPs (multiply-add = 2 FLOPs), from the shapes


def forward_flops(shape: Shape, conv_stem: bool = False, conv_stem_channels: int = 32, conv_stem_depth: int = 1,
                  cls_only_last_block: bool = False) -> float:
    """FLOPs of one image's forward pass: patch embedding, blocks (projections + attention), head.

    `cls_only_last_block`: the last block computes the CLS token's output alone (our CLS-pooled classifier):
    keys and values for every token, the query, attention, output projection and MLP for one.
    """
    grid = shape.image_size // shape.patch_size
    n, t, d, m = grid * grid, shape.tokens, shape.hidden_size, shape.intermediate_size
    if conv_stem:  # modeling_vit.ConvStem: per stage one stride-2 3x3 conv, then depth - 1 stride-1 ones
        flops, side, c_in, c_out = 0.0, shape.image_size, shape.num_channels, conv_stem_channels
        for _ in range(int(math.log2(shape.patch_size))):
            side //= 2
            flops += 2 * side * side * c_out * 9 * (c_in + (conv_stem_depth - 1) * c_out)
            c_in, c_out = c_out, min(c_out * 2, d)
        embed = flops + 2 * n * c_in * d
    else:
        embed = 2 * n * shape.num_channels * shape.patch_size**2 * d
    per_layer = 2 * t * d * (3 * d + d + 2 * m) + 2 * 2 * t * t * d
    last_layer = 2 * t * d * 2 * d + 2 * d * (d + d + 2 * m) + 2 * 2 * t * d if cls_only_last_block else per_layer
    # SigLIP's attention pooling: keys and values of every token, one query, its projection and MLP.
    pooling = 2 * t * d * 2 * d + 2 * d * (2 * d + 2 * m) + 2 * 2 * t * d if shape.family == "siglip" else 0
    head_in = 2 * d if shape.family == "dinov2" else d
    return embed + (shape.num_layers - 1) * per_layer + last_layer + pooling + 2 * head_in * shape.num_labels


def model_flops(name: str, shape: Shape) -> float:
    extra = shape.ours_extra if name == "ours" else {}
    return forward_flops(shape, conv_stem=extra.get("patch_embedding") == "conv",
                         conv_stem_channels=extra.get("conv_stem_channels", 32),
                         conv_stem_depth=extra.get("conv_stem_depth", 1),
                         cls_only_last_block=name.startswith("ours") and shape.family == "vit"
                         and extra.get("pooling", "cls") == "cls")


def synchronize(device: torch.device) -> None:
    """Waits for queued GPU work, so that wall-clock time covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, size: int | None = None, repeats: int = 7,
                device: torch.device = torch.device("cpu")) -> float:
    """GFLOP/s of the best of `repeats` size^3 matmuls: the machine's practical peak for `dtype`."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(size, size, dtype=dtype, device=device), torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# ----------------------------------------------------------------------------------------------------------
# Timed steps


def make_step(model: torch.nn.Module, shape: Shape, mode: str, dtype: str,
              device: torch.device = torch.device("cpu")) -> Callable[[], None]:
    """A closure running one inference batch or one training step (forward, loss, backward, AdamW)."""
    model.to(device)
    pixels = torch.randn(shape.batch_size, shape.num_channels, shape.image_size, shape.image_size, device=device)
    labels = torch.randint(0, shape.num_labels, (shape.batch_size,), device=device)
    autocast = dtype == "bf16"

    if mode == "infer":
        model.eval()

        def step() -> None:
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits_of(model(pixels))

        return step

    model.train()
    # fused: one kernel for all parameters (the default on CPU is a loop of ~8 ops per parameter).
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(logits_of(model(pixels)).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def peak_step_memory(step: Callable[[], None], device: torch.device = torch.device("cpu")) -> float:
    """MiB: the highest level of tensor memory allocated during one step above what was held before it.

    On a GPU: the caching allocator's statistics. On the CPU (no allocator statistics): the profiler's
    allocation events, each op's own allocations minus frees, accumulated in time order; tensors only, not
    oneDNN scratch space.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    level = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        level += event.self_cpu_memory_usage
        peak = max(peak, level)
    return peak / 2**20


# Where a step's time goes: every ATen kernel call is timed where it runs, grouped below. Matrix products are
# what the FLOP count measures; the rest is what a faster implementation of the same computation could shrink,
# but GELU, softmax, LayerNorm and the optimizer have to run in some form. (The profiler gave similar GEMM
# shares, but its own allocations move page faults onto the element-wise ops that first touch fresh memory:
# GELU's backward read 12 ms a call in it against 2 ms by this clock.)
# Without autograd (inference) the clock sees composite ops whole (linear, layer_norm, SDPA), with it the kernels.
OP_GROUPS = {
    "matmul": ("mm", "addmm", "bmm", "baddbmm", "convolution", "convolution_backward",
               "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention_for_cpu_backward",
               "linear", "matmul", "conv2d", "scaled_dot_product_attention"),
    "gelu": ("gelu", "gelu_", "gelu_backward"),
    "softmax": ("_softmax", "softmax", "_softmax_backward_data"),
    "layer norm": ("native_layer_norm", "layer_norm", "native_layer_norm_backward"),
    "optimizer": ("_fused_adamw_",),
    "casts": ("_to_copy",),
}
GROUP_OF_OP = {op: group for group, ops in OP_GROUPS.items() for op in ops}
# Reported besides OP_GROUPS: every other kernel, and the time outside kernels (Python, the autograd engine).
TIME_SPLIT_KEYS = ("step", *OP_GROUPS, "other ops", "outside kernels")


def time_split(step: Callable[[], None], steps: int = 3,
               device: torch.device = torch.device("cpu")) -> dict[str, float] | None:
    """Milliseconds of one step (median of `steps`) per TIME_SPLIT_KEYS: the whole step, then kernel time by
    group. CPU only (GPU kernels run asynchronously to the Python thread that launches them)."""
    if device.type != "cpu":
        return None
    from torch.utils._python_dispatch import TorchDispatchMode

    class KernelClock(TorchDispatchMode):
        """Sits below autograd and autocast, so it sees the kernels that actually run, each once."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds = dict.fromkeys(TIME_SPLIT_KEYS, 0.0)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            start = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            self.seconds[GROUP_OF_OP.get(func.overloadpacket.__name__, "other ops")] += time.perf_counter() - start
            return out

    splits = []
    for _ in range(steps):
        clock = KernelClock()
        start = time.perf_counter()
        with clock:
            step()
        clock.seconds["step"] = time.perf_counter() - start
        clock.seconds["outside kernels"] = clock.seconds["step"] - sum(
            clock.seconds[key] for key in TIME_SPLIT_KEYS if key not in ("step", "outside kernels"))
        splits.append(clock.seconds)
    return {key: 1e3 * statistics.median(split[key] for split in splits) for key in TIME_SPLIT_KEYS}


def gemm_share(split: dict[str, float]) -> float:
    """The matrix products' part of a step's time (from `time_split`)."""
    return split["matmul"] / split["step"]


def minor_page_faults() -> int | None:
    """This process's minor page faults so far (None where the resource module is missing: Windows)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def others_cpu_load(window: float = 0.25) -> float | None:
    """CPUs' worth of work other processes did during `window` seconds (Linux /proc/stat), None elsewhere."""
    def read() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = read()
        time.sleep(window)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):
        return None
    cpus = os.cpu_count() or 1
    return max(0.0, (1 - (idle1 - idle0) / max(total1 - total0, 1)) * cpus)


def wait_for_quiet(max_wait: float, threshold: float = 0.3) -> float | None:
    """Waits (up to `max_wait` s) until other processes use under `threshold` CPUs; returns the last load."""
    deadline = time.monotonic() + max_wait
    load = others_cpu_load()
    while load is not None and load > threshold and time.monotonic() < deadline:
        time.sleep(0.5)
        load = others_cpu_load()
    return load


@dataclass
class Cell:
    shape: str
    model: str
    mode: str  # "infer" or "train"
    dtype: str  # "fp32" or "bf16"
    batch_size: int = 0
    seconds: list[float] = field(default_factory=list)  # per round, per step
    images_per_s: float = 0.0  # from the median round
    best_images_per_s: float = 0.0  # from the fastest round (least disturbed by other processes)
    gflops_per_image: float = 0.0
    utilisation: float = 0.0  # of the measured matmul peak, at the best round's speed
    peak_mib: float = 0.0
    time_split_ms: dict[str, float] | None = None  # where a step's time goes (see time_split); CPU only
    # Minor page faults of the process per timed step, median over rounds (Linux/macOS): fresh memory from the
    # kernel, a cost that FLOP counts miss.
    page_faults: float | None = None
    # Per peer: median over rounds of (peer's time / our time) in the same round, and best / best.
    speedup: dict[str, float] = field(default_factory=dict)
    best_speedup: dict[str, float] = field(default_factory=dict)


def run_cell(
    shape: Shape,
    mode: str,
    dtype: str,
    models: tuple[str, ...] = MODELS,
    repeats: int = 7,
    steps: int = 1,
    warmup: int = 2,
    peaks: dict[str, float] | None = None,
    memory: bool = True,
    quiet_wait: float = 0.0,
    log: Callable[[str], None] = print,
    device: torch.device = torch.device("cpu"),
) -> list[Cell]:
    """Times one (shape, mode, dtype) for every model: all models in every round, the order rotating."""
    torch.manual_seed(0)
    steps_of = {name: make_step(build_model(name, shape), shape, mode, dtype, device) for name in models}
    cells = {name: Cell(shape.name, name, mode, dtype, shape.batch_size) for name in models}
    faults: dict[str, list[int]] = {name: [] for name in models}
    for name in models:
        for _ in range(warmup):
            steps_of[name]()
    order = list(models)
    for round_index in range(repeats):
        if quiet_wait:
            wait_for_quiet(quiet_wait)
        for name in order[round_index % len(order):] + order[: round_index % len(order)]:
            synchronize(device)
            faults_before = minor_page_faults()
            start = time.perf_counter()
            for _ in range(steps):
                steps_of[name]()
            synchronize(device)
            cells[name].seconds.append((time.perf_counter() - start) / steps)
            if faults_before is not None:
                faults[name].append((minor_page_faults() - faults_before) // steps)
    flops = {name: model_flops(name, shape) * (3 if mode == "train" else 1) for name in models}
    for name, cell in cells.items():
        cell.images_per_s = shape.batch_size / statistics.median(cell.seconds)
        cell.best_images_per_s = shape.batch_size / min(cell.seconds)
        cell.gflops_per_image = flops[name] / 1e9
        cell.page_faults = statistics.median(faults[name]) if faults[name] else None
        if peaks:
            cell.utilisation = cell.best_images_per_s * cell.gflops_per_image / peaks[dtype]
        if memory:
            cell.peak_mib = peak_step_memory(steps_of[name], device)
            cell.time_split_ms = time_split(steps_of[name], device=device)
    for ours in (n for n in models if n.startswith("ours")):
        for peer in (n for n in models if not n.startswith("ours")):
            ratios = [p / o for p, o in zip(cells[peer].seconds, cells[ours].seconds)]
            cells[ours].speedup[peer] = statistics.median(ratios)
            cells[ours].best_speedup[peer] = min(cells[peer].seconds) / min(cells[ours].seconds)
    for cell in cells.values():
        vs = " ".join(f"{p}x{r:.2f}" for p, r in cell.speedup.items())
        log(f"{shape.name:13s} {mode:5s} {dtype:4s} {cell.model:10s} {cell.images_per_s:7.1f} img/s "
            f"(best {cell.best_images_per_s:7.1f}, util {cell.utilisation:5.1%}, peak {cell.peak_mib:6.0f} MiB) {vs}")
    del steps_of
    gc.collect()
    return list(cells.values())


# ----------------------------------------------------------------------------------------------------------
# Attention kernels alone (the numbers behind modeling_vit.use_eager_attention)


def attention_table(
    cases: tuple[tuple[int, int, int, int], ...] = ((256, 3, 50, 64), (32, 3, 197, 64), (16, 6, 197, 64), (8, 6, 577, 64)),
    repeats: int = 9,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Best-of-`repeats` ms of eager (bmm + softmax) vs SDPA attention, forward and forward + backward."""
    from vit_finetune.modeling_vit import EagerAttention

    def eager(qkv: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return EagerAttention.apply(qkv, qkv.shape[-1] ** -0.5)
        query, key, value = qkv.unbind(0)
        return torch.bmm(torch.bmm(query, key.transpose(1, 2)).mul_(qkv.shape[-1] ** -0.5).softmax(-1), value)

    def sdpa(qkv: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(*qkv.unbind(0))

    rows = []
    for batch, heads, tokens, head_dim in cases:
        for dtype in (torch.float32, torch.bfloat16):
            for mode in ("infer", "train"):
                qkv = torch.randn(3, batch * heads, tokens, head_dim, dtype=dtype, requires_grad=mode == "train")
                grad = torch.randn(batch * heads, tokens, head_dim, dtype=dtype)

                def run(fn: Callable) -> None:
                    if mode == "train":
                        fn(qkv).backward(grad)
                        qkv.grad = None
                    else:
                        with torch.no_grad():
                            fn(qkv)

                best = {"eager": math.inf, "sdpa": math.inf}
                for repeat in range(repeats + 2):
                    for name, fn in (("eager", eager), ("sdpa", sdpa)):
                        start = time.perf_counter()
                        run(fn)
                        if repeat >= 2:
                            best[name] = min(best[name], time.perf_counter() - start)
                row = dict(batch=batch, heads=heads, tokens=tokens, head_dim=head_dim, mode=mode,
                           dtype=str(dtype).removeprefix("torch."), eager_ms=best["eager"] * 1e3,
                           sdpa_ms=best["sdpa"] * 1e3, sdpa_over_eager=best["sdpa"] / best["eager"])
                log(f"attention B{batch} H{heads} T{tokens} {row['dtype']:8s} {mode:5s} eager {row['eager_ms']:7.2f} ms "
                    f"sdpa {row['sdpa_ms']:7.2f} ms  sdpa/eager {row['sdpa_over_eager']:.2f}")
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------
# Reports


def run_all(
    shapes: list[str], models: tuple[str, ...] = MODELS, modes: tuple[str, ...] = ("infer", "train"),
    dtypes: tuple[str, ...] = ("fp32", "bf16"), repeats: int = 7, steps: int = 1, warmup: int = 2,
    memory: bool = True, quiet_wait: float = 0.0, attention: bool = False, log: Callable[[str], None] = print,
    device: torch.device = torch.device("cpu"), batch_size: int | None = None,
) -> dict:
    """Runs the benchmark and returns the JSON-able results (`batch_size` replaces every shape's own)."""
    import dataclasses

    if device.type == "cuda":
        # "fp32" means float32 for the peak and for every model alike, not TF32 (PyTorch's default for matmuls
        # is already off; cuDNN's convolutions would use TF32 otherwise).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if quiet_wait:
        wait_for_quiet(quiet_wait)
    peaks = {"fp32": matmul_peak(torch.float32, device=device), "bf16": matmul_peak(torch.bfloat16, device=device)}
    log(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    cells: list[Cell] = []
    for shape_name in shapes:
        shape = SHAPES[shape_name]
        if batch_size:
            shape = dataclasses.replace(shape, batch_size=batch_size)
        shape_models = models + (("ours-plain",) if shape.ours_extra and "ours" in models else ())
        for mode in modes:
            for dtype in dtypes:
                cells += run_cell(shape, mode, dtype, shape_models, repeats, steps, warmup, peaks, memory,
                                  quiet_wait, log, device)
        # The peak is measured again after every shape and the best reading kept: a busy neighbour only
        # lowers it (and a low peak would inflate every utilisation).
        for key, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            if quiet_wait:
                wait_for_quiet(quiet_wait)
            peaks[key] = max(peaks[key], matmul_peak(dtype, device=device))
        log(f"matmul peak so far: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    for cell in cells:
        cell.utilisation = cell.best_images_per_s * cell.gflops_per_image / peaks[cell.dtype]
    import transformers

    try:
        import timm

        timm_version = timm.__version__
    except ImportError:
        timm_version = None
    return {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "timm": timm_version,
        },
        "matmul_peak_gflops": peaks,
        "method": {"repeats": repeats, "steps_per_round": steps, "warmup": warmup, "quiet_wait_s": quiet_wait,
                   "optimizer": "AdamW(fused=True)", "bf16": f"torch.autocast('{device.type}', dtype=torch.bfloat16)",
                   "batch_size": batch_size or "per shape"},
        "shapes": {name: {**SHAPES[name].__dict__, "tokens": SHAPES[name].tokens} for name in shapes},
        "cells": [cell.__dict__ for cell in cells],
        "attention": attention_table(log=log) if attention else [],
    }


PEERS = ("hf-sdpa", "hf-eager", "timm")


def peers_run(results: dict) -> list[str]:
    """The peers this run timed (`--models` may leave some out), in PEERS order."""
    timed = {cell["model"] for cell in results["cells"]}
    return [peer for peer in PEERS if peer in timed]


def like_for_like(cell: dict) -> bool:
    """Our cell with the peers' architecture: "ours" for plain shapes, "ours-plain" where ours has the recipe's
    extras (a conv stem has more FLOPs: those ratios are shown, not scored)."""
    if not cell["model"].startswith("ours"):
        return False
    return cell["model"] == "ours-plain" or not SHAPES[cell["shape"]].ours_extra


def to_markdown(results: dict) -> str:
    peers_timed = peers_run(results)
    m = results["machine"]
    peaks = results["matmul_peak_gflops"]
    lines = [
        f"Machine: {m['processor']}, {m['cpus']} CPUs ({m['torch_threads']} torch threads)"
        f"{'; GPU: ' + m['device'] if m.get('device', 'cpu') != 'cpu' else ''}; torch {m['torch']}, "
        f"transformers {m['transformers']}, timm {m['timm']}. Matmul peak: "
        f"float32 {peaks['fp32']:.0f} GFLOP/s, bfloat16 {peaks['bf16']:.0f} GFLOP/s.",
        "",
        "Speed-up of ours = peer's time / our time for the same batch, median over rounds in which every model "
        "ran once, one after the other (in brackets: best round / best round). images/s: median round "
        "(best round). Utilisation: model FLOPs at the best round's speed / matmul peak of that dtype. "
        "Training step = forward, cross-entropy, backward, AdamW(fused=True); bf16 = autocast. "
        "Memory: peak tensor memory a step allocates (profiler on CPU, allocator statistics on GPU). "
        "GEMM share (CPU): the part of a step's time spent in matrix products (mm, addmm, bmm, convolutions, "
        "fused SDPA; kernels timed where they run); what is left is casts, element-wise ops, norms, softmax and "
        "the optimizer, split below for training steps. Page faults: the "
        "process's minor page faults per timed step (fresh memory from the kernel), median round.",
        "",
        "| shape | step | dtype | ours images/s | util | peak MiB | "
        + "".join(f"vs {peer} | " for peer in peers_timed) + "vs best peer |",
        "|---|---|---|---:|---:|---:|" + "---:|" * (len(peers_timed) + 1),
    ]
    cells = results["cells"]
    for cell in (c for c in cells if c["model"].startswith("ours")):
        peers = [p for p in peers_timed if p in cell["speedup"]]
        ratios = " | ".join(f"{cell['speedup'][p]:.2f}x ({cell['best_speedup'][p]:.2f}x)" if p in cell["speedup"]
                            else "-" for p in peers_timed)
        worst = min(cell["speedup"][p] for p in peers) if peers else float("nan")
        worst_best = min(cell["best_speedup"][p] for p in peers) if peers else float("nan")
        name = cell["shape"]
        if SHAPES[cell["shape"]].ours_extra:
            name += " (ours-plain)" if cell["model"] == "ours-plain" else " (recipe model)"
        verdict = f"**{worst:.2f}x** ({worst_best:.2f}x)" if like_for_like(cell) else "not like for like"
        lines.append(
            f"| {name} | {cell['mode']} | {cell['dtype']} | {cell['images_per_s']:.1f} ({cell['best_images_per_s']:.1f}) "
            f"| {cell['utilisation']:.0%} | {cell['peak_mib']:.0f} | {ratios} | {verdict} |"
        )
    lines += ["", "All models:", "",
              "| shape | step | dtype | model | images/s median (best) | GFLOP/image | util | peak MiB | GEMM share "
              "| page faults/step |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        share = f"{gemm_share(c['time_split_ms']):.0%}" if c.get("time_split_ms") else "-"
        faults = f"{c['page_faults']:,.0f}" if c.get("page_faults") is not None else "-"
        lines.append(f"| {c['shape']} | {c['mode']} | {c['dtype']} | {c['model']} | {c['images_per_s']:.1f} "
                     f"({c['best_images_per_s']:.1f}) | {c['gflops_per_image']:.2f} | {c['utilisation']:.0%} | "
                     f"{c['peak_mib']:.0f} | {share} | {faults} |")
    lines += time_split_tables(results, peers_timed)
    notes = [f"- {name}: {SHAPES[name].note}" for name in results["shapes"] if SHAPES[name].note]
    if notes:
        lines += ["", *notes]
    if results.get("attention"):
        lines += ["", "Attention alone, best of 9 (ms):", "", "| batch x heads | tokens | dtype | step | eager | SDPA | SDPA / eager |",
                  "|---|---:|---|---|---:|---:|---:|"]
        for r in results["attention"]:
            lines.append(f"| {r['batch']}x{r['heads']} | {r['tokens']} | {r['dtype']} | {r['mode']} | {r['eager_ms']:.2f} | "
                         f"{r['sdpa_ms']:.2f} | {r['sdpa_over_eager']:.2f} |")
    return "\n".join(lines) + "\n"


def time_split_tables(results: dict, peers_timed: list[str]) -> list[str]:
    """Markdown: where each training step's time goes, and what that bounds our speed-up to."""
    cells = [c for c in results["cells"] if c["mode"] == "train" and c.get("time_split_ms")]
    if not cells:
        return []
    groups = [key for key in TIME_SPLIT_KEYS if key != "step"]
    lines = ["", "Where a training step's time goes (ms; every kernel timed where it runs, median of 3 steps; "
             "'outside kernels' is Python, the autograd engine and the clock itself, which slows small steps most):", "",
             "| shape | dtype | model | step | " + " | ".join(groups) + " |", "|---|---|---|" + "---:|" * (len(groups) + 1)]
    for c in cells:
        split = c["time_split_ms"]
        lines.append(f"| {c['shape']} | {c['dtype']} | {c['model']} | {split['step']:.1f} | "
                     + " | ".join(f"{split[key]:.1f}" for key in groups) + " |")
    lines += ["", "What that bounds our speed-up to: the best peer's step (median round) over our matrix products "
              "alone (no implementation of the same computation runs faster than that), and over our matrix products "
              "plus GELU, softmax, LayerNorm and the optimizer (the kernels any implementation runs in some form; "
              "fused ones could run them somewhat faster than PyTorch's):", "",
              "| shape | dtype | best peer | now | bound: matmul alone | bound: with GELU, softmax, LayerNorm, optimizer |",
              "|---|---|---|---:|---:|---:|"]
    by_key = {(c["shape"], c["dtype"], c["model"]): c for c in results["cells"] if c["mode"] == "train"}
    for ours in (c for c in cells if like_for_like(c)):
        peers = [p for p in peers_timed if p in ours["speedup"]]
        if not peers:
            continue
        best = by_key[(ours["shape"], ours["dtype"], min(peers, key=ours["speedup"].get))]  # as "vs best peer"
        best_ms = 1e3 * statistics.median(best["seconds"])
        split = ours["time_split_ms"]
        needed = split["matmul"] + sum(split[key] for key in ("gelu", "softmax", "layer norm", "optimizer"))
        lines.append(f"| {ours['shape']} | {ours['dtype']} | {best['model']} | {ours['speedup'][best['model']]:.2f}x | "
                     f"{best_ms / split['matmul']:.2f}x | {best_ms / needed:.2f}x |")
    return lines


def plot(results: dict, path: Path) -> None:
    """Bar chart: our speed-up over each peer, per like-for-like cell, with the 1.0x and 1.3x lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in results["cells"] if like_for_like(c)]
    labels = [f"{c['shape']}\n{c['mode']} {c['dtype']}" for c in cells]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cells) + 2), 4.5))
    peers = peers_run(results)
    width = 0.8 / max(len(peers), 1)
    for i, peer in enumerate(peers):
        values = [c["speedup"].get(peer, float("nan")) for c in cells]
        ax.bar([x + (i - (len(peers) - 1) / 2) * width for x in range(len(cells))], values, width, label=f"vs {peer}")
    ax.axhline(1.0, color="black", linewidth=1)
    ax.axhline(1.3, color="grey", linewidth=1, linestyle="--")
    ax.set_xticks(range(len(cells)), labels, fontsize=7)
    ax.set_ylabel("speed-up of vit-finetune (peer time / our time)")
    ax.set_title("vit-finetune ViT vs transformers and timm, same machine, one process")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(results: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "models.json", "markdown": out / "models.md", "png": out / "models.png"}
    paths["json"].write_text(json.dumps(results, indent=2), encoding="utf-8")
    paths["markdown"].write_text(to_markdown(results), encoding="utf-8")
    plot(results, paths["png"])
    return paths


def add_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The model benchmark's options (`prefix` keeps them apart inside benchmarks/pipeline.py)."""
    parser.add_argument(f"--{prefix}shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES),
                        help="model shapes to benchmark")
    parser.add_argument(f"--{prefix}models", nargs="+", choices=MODELS, default=list(MODELS), help="models to compare")
    parser.add_argument(f"--{prefix}modes", nargs="+", choices=("infer", "train"), default=["infer", "train"])
    parser.add_argument(f"--{prefix}dtypes", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument(f"--{prefix}repeats", type=int, default=7, help="timed rounds (every model once per round)")
    parser.add_argument(f"--{prefix}steps", type=int, default=1, help="steps per model per round")
    parser.add_argument(f"--{prefix}warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument(f"--{prefix}no_memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument(f"--{prefix}quiet_wait", type=float, default=10.0,
                        help="before each round wait up to this many seconds for other processes to go quiet")
    parser.add_argument(f"--{prefix}attention", action="store_true", help="also time the attention kernels alone")
    parser.add_argument(f"--{prefix}device", default="cpu", help="cpu or cuda (timings then wait for the GPU)")
    parser.add_argument(f"--{prefix}batch_size", type=int, default=None,
                        help="one batch size for every shape (default: each shape's, sized for a CPU)")


def run_from_args(args: argparse.Namespace, out: Path, prefix: str = "") -> dict:
    get = lambda name: getattr(args, prefix + name)  # noqa: E731
    results = run_all(
        get("shapes"), tuple(get("models")), tuple(get("modes")), tuple(get("dtypes")), get("repeats"),
        get("steps"), get("warmup"), not get("no_memory"), get("quiet_wait"), get("attention"),
        log=lambda line: print(line, file=sys.stderr, flush=True), device=torch.device(get("device")),
        batch_size=get("batch_size"),
    )
    write_reports(results, out)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--out", default="outputs/benchmark", help="folder for models.md, models.json, models.png")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run_from_args(args, Path(args.out))
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
