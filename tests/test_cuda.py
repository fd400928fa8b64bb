"""The CUDA path: bf16 autocast, SDPA, training on the GPU, and DDP (NCCL) with one GPU process.

Skipped where no GPU is present (CI has none); run on a GPU machine with `pytest tests/test_cuda.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from training_fixtures import run_python, tiny_args, write_dataset

from vit_finetune import ViTConfig, ViTForImageClassification
from vit_finetune.modeling_vit import use_eager_attention

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CONFIG = dict(image_size=64, patch_size=8, hidden_size=128, num_hidden_layers=3, num_attention_heads=4,
              intermediate_size=256, num_labels=7)


def make_model(attention: str, **overrides) -> ViTForImageClassification:
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(**{**CONFIG, **overrides}))
    model.config._attn_implementation = attention
    return model.cuda()


def test_gpu_attention_runs_sdpa_in_every_dtype() -> None:
    gpu = torch.device("cuda")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert not use_eager_attention("sdpa", dtype, gpu, 65)


@pytest.mark.parametrize("overrides", [{}, {"patch_embedding": "conv", "pooling": "mean",
                                             "position_embedding": "sincos", "conv_stem_depth": 2}])
def test_sdpa_matches_eager_attention_on_gpu(overrides: dict) -> None:
    """Same weights, both attention paths: logits and gradients agree in float32 (TF32 off)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    pixels = torch.randn(6, 3, 64, 64, device="cuda")
    labels = torch.randint(0, 7, (6,), device="cuda")
    outputs = {}
    for attention in ("eager", "sdpa"):
        model = make_model(attention, **overrides)
        out = model(pixel_values=pixels, labels=labels)
        out.loss.backward()
        outputs[attention] = (out.logits.detach(), {n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(outputs["sdpa"][0], outputs["eager"][0], atol=1e-4, rtol=1e-4)
    for name, grad in outputs["eager"][1].items():
        torch.testing.assert_close(outputs["sdpa"][1][name], grad, atol=1e-4, rtol=1e-3, msg=name)


def test_bf16_autocast_training_step_on_gpu_tracks_float32() -> None:
    """bf16 autocast logits stay close to float32 ones, and a bf16 step lowers the loss on a fixed batch."""
    model = make_model("sdpa")
    pixels = torch.randn(16, 3, 64, 64, device="cuda")
    labels = torch.randint(0, 7, (16,), device="cuda")
    with torch.no_grad():
        reference = model(pixel_values=pixels).logits
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(pixel_values=pixels).logits
    assert low.dtype == torch.bfloat16
    assert (low.float() - reference).abs().max() < 0.05 * reference.abs().max() + 0.05
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(pixel_values=pixels, labels=labels).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]


def check_gpu_run(output: Path, processes: int) -> None:
    from transformers import AutoModelForImageClassification, pipeline

    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["num_processes"] == processes
    assert metrics["test"]["samples"] == 9
    classifier = pipeline("image-classification", model=str(output), device=0)
    first = sorted((output.parent / "images" / "test" / "cat").iterdir())[0]
    predictions = classifier(str(first))
    assert {p["label"] for p in predictions} <= {"cat", "dog", "fox"}
    model = AutoModelForImageClassification.from_pretrained(output).cuda()
    assert next(model.parameters()).is_cuda


def test_train_bf16_on_gpu(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "images")
    output = tmp_path / "bf16"
    result = run_python(["-m", "vit_finetune.train", *tiny_args(data, output, mixed_precision="bf16")])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "process(es) on cuda (NO), mixed precision bf16" in result.stderr
    check_gpu_run(output, processes=1)


def test_ddp_one_gpu_process_under_torchrun(tmp_path: Path) -> None:
    """torchrun with one process per GPU: Accelerate's MULTI_GPU (DDP over NCCL) path, here with one GPU."""
    data = write_dataset(tmp_path / "images")
    output = tmp_path / "ddp"
    result = run_python(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                         "-m", "vit_finetune.train", *tiny_args(data, output, mixed_precision="bf16")])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "1 process(es) on cuda" in result.stderr and "(MULTI_GPU)" in result.stderr  # DDP over NCCL
    check_gpu_run(output, processes=1)
