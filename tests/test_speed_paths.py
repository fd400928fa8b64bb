"""Every fast path of the model computes what the plain path computes (values and gradients), in float32 and
bfloat16. Speed itself is measured by benchmarks/models.py, not tested here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from training_fixtures import run_python

import vit_finetune.modeling_vit as modeling
from vit_finetune import ViTConfig, ViTForImageClassification
from vit_finetune.modeling_vit import EagerAttention, use_eager_attention

TINY = dict(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=96, num_labels=5)


def plain_attention(qkv: torch.Tensor, scale: float) -> torch.Tensor:
    query, key, value = qkv.unbind(0)
    return ((query @ key.transpose(1, 2)) * scale).softmax(-1) @ value


def test_eager_attention_gradcheck():
    qkv = torch.randn(3, 4, 7, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: EagerAttention.apply(t, 0.3), (qkv,))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_eager_attention_matches_autograd(dtype, tol):
    torch.manual_seed(0)
    qkv = torch.randn(3, 6, 17, 16, dtype=dtype, requires_grad=True)
    grad_out = torch.randn(6, 17, 16, dtype=dtype)
    fast = EagerAttention.apply(qkv, 0.25)
    (fast_grad,) = torch.autograd.grad(fast, qkv, grad_out)
    plain = plain_attention(qkv, 0.25)
    (plain_grad,) = torch.autograd.grad(plain, qkv, grad_out)
    assert fast.dtype == fast_grad.dtype == dtype
    torch.testing.assert_close(fast, plain, atol=tol, rtol=tol)
    torch.testing.assert_close(fast_grad, plain_grad, atol=tol, rtol=tol)


def test_attention_choice():
    cpu = torch.device("cpu")
    assert use_eager_attention("eager", torch.float32, cpu, 50)
    # The default, "vit_cpu_fast": SDPA in float32, eager in bfloat16 up to EAGER_ATTENTION_MAX_TOKENS, on the CPU.
    assert not use_eager_attention("vit_cpu_fast", torch.float32, cpu, 50)
    assert use_eager_attention("vit_cpu_fast", torch.bfloat16, cpu, 197)
    assert use_eager_attention("vit_cpu_fast", torch.bfloat16, cpu, 577)
    # Without autograd SDPA's fused forward wins beyond short sequences.
    assert use_eager_attention("vit_cpu_fast", torch.bfloat16, cpu, 65, backward=False)
    assert not use_eager_attention("vit_cpu_fast", torch.bfloat16, cpu, 197, backward=False)
    assert not use_eager_attention("vit_cpu_fast", torch.bfloat16, cpu, 1025)
    assert not use_eager_attention("vit_cpu_fast", torch.bfloat16, torch.device("meta"), 50)
    # Asked for by name, "sdpa" is SDPA whatever the dtype.
    assert not use_eager_attention("sdpa", torch.bfloat16, cpu, 197)
    assert not use_eager_attention("flash_attention_2", torch.bfloat16, cpu, 50)


def run_model(model: ViTForImageClassification, pixels: torch.Tensor, labels: torch.Tensor, bf16: bool,
              **kwargs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(pixels, labels=labels, **kwargs)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return out.logits.float(), grads


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


PATHS = {
    # The model as shipped: on the CPU, SDPA in float32, eager attention with the hand-written backward in bf16.
    "fast": {},
    # The same eager maths, differentiated by autograd.
    "eager-autograd": {"use_eager_attention": lambda *args: True, "apply": plain_attention},
    # PyTorch's fused kernel everywhere.
    "sdpa": {"use_eager_attention": lambda implementation, *args: implementation == "eager"},
}


@pytest.mark.parametrize("bf16, tol", [(False, 1e-5), (True, 3e-2)])
@pytest.mark.parametrize("patch_embedding", ["patch", "conv"])
def test_every_attention_path_gives_the_same_logits_and_gradients(monkeypatch, bf16, tol, patch_embedding):
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(**TINY, patch_embedding=patch_embedding)).train()
    pixels, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    results = {}
    for name, patches in PATHS.items():
        with monkeypatch.context() as patch:
            if "use_eager_attention" in patches:
                patch.setattr(modeling, "use_eager_attention", patches["use_eager_attention"])
            if "apply" in patches:
                patch.setattr(EagerAttention, "apply", patches["apply"])
            results[name] = run_model(model, pixels, labels, bf16)
    # output_attentions takes the plain eager path whatever the dtype.
    results["output_attentions"] = run_model(model, pixels, labels, bf16, output_attentions=True)
    reference_logits, reference_grads = results["eager-autograd"]
    for name, (logits, grads) in results.items():
        assert relative_error(logits, reference_logits) < tol, name
        for param, grad in grads.items():
            assert relative_error(grad, reference_grads[param]) < tol, (name, param)


def test_bf16_training_takes_the_hand_written_backward(monkeypatch):
    calls = []
    original = EagerAttention.apply
    monkeypatch.setattr(EagerAttention, "apply", lambda *args: calls.append(1) or original(*args))
    model = ViTForImageClassification(ViTConfig(**TINY)).train()
    pixels = torch.randn(2, 3, 32, 32)
    model(pixels)  # float32 training: SDPA
    assert len(calls) == 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(pixels)
    # Every block but the last, which attends from the CLS token alone (the head reads nothing else).
    blocks = TINY["num_hidden_layers"] - 1
    assert len(calls) == blocks
    with torch.no_grad():
        model(pixels)  # inference: SDPA in float32, plain eager in bf16, no autograd Function either way
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(pixels)
    assert len(calls) == blocks


@pytest.mark.parametrize("bf16", [False, True])
def test_inference_paths_agree(bf16):
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(**TINY)).eval()
    pixels = torch.randn(3, 3, 32, 32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        fast = model(pixels).logits.float()
        model.config._attn_implementation = "eager"
        eager = model(pixels).logits.float()
    assert relative_error(fast, eager) < (3e-2 if bf16 else 1e-5)


def test_attention_dropout_in_training_uses_the_plain_path_and_is_random():
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(**TINY, attention_probs_dropout_prob=0.5)).train()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first, second = model(pixels).logits, model(pixels).logits
    assert not torch.equal(first, second)
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(model(pixels).logits, model(pixels).logits)


def load_benchmark_models():
    # By path: benchmarks/ is not installed, and plain `pytest` does not put the repository root on sys.path.
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "models.py"
    spec = importlib.util.spec_from_file_location("benchmarks.models", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["ours", "ours-plain", "hf-eager", "timm"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_benchmark_counts_the_flops_each_model_runs(name, pooling):
    """The benchmark's FLOP utilisation divides by `model_flops`: it must be what the model's matrix products
    and convolutions do (torch's FlopCounterMode counts the executed ops), our CLS-only last block included."""
    from torch.utils.flop_counter import FlopCounterMode

    bench = load_benchmark_models()
    extra = dict(patch_embedding="conv", conv_stem_channels=16, conv_stem_depth=2, pooling=pooling)
    shape = bench.Shape("tiny", 32, 8, 3, 64, 3, 2, 128, 10, 4, ours_extra=extra)
    model = bench.build_model(name, shape).eval()
    # Explicit attention matmuls: FlopCounterMode does not count the CPU SDPA kernel.
    if name == "timm":
        for block in model.blocks:
            block.attn.fused_attn = False
    elif name.startswith("ours"):
        model.config._attn_implementation = "eager"
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(4, 3, 32, 32))
    assert counter.get_total_flops() == 4 * bench.model_flops(name, shape)


def test_benchmark_report_has_a_column_per_peer_timed(tmp_path):
    """`--models` may leave peers out: each ratio must sit under its own peer's column."""
    bench = load_benchmark_models()
    bench.main(["--shapes", "fmnist", "--models", "ours", "timm", "--modes", "infer", "--dtypes", "fp32",
                "--repeats", "1", "--warmup", "0", "--no_memory", "--quiet_wait", "0", "--out", str(tmp_path)])
    table = [line for line in (tmp_path / "models.md").read_text().splitlines() if line.startswith("| ")]
    header = [column.strip() for column in table[0].strip("|").split("|")]
    assert header[-2:] == ["vs timm", "vs best peer"] and "vs hf-sdpa" not in header
    results = json.loads((tmp_path / "models.json").read_text())
    for line in table[1:3]:  # the recipe model's row, then ours-plain's
        row = dict(zip(header, (value.strip() for value in line.strip("|").split("|")), strict=True))
        cell = next(c for c in results["cells"] if c["model"] == ("ours-plain" if "ours-plain" in row["shape"] else "ours"))
        assert row["vs timm"].startswith(f"{cell['speedup']['timm']:.2f}x")
    assert (tmp_path / "models.png").stat().st_size > 0


def test_time_split_puts_every_kernel_of_a_step_in_its_group():
    """The GEMM share and the speed-up bounds come from `time_split`: in a bf16 training step of our model every
    named group must see its kernels (an op renamed in torch, or kernels hidden from the clock by autocast or
    autograd, would leave a group empty), and kernel time must fit inside the step (a kernel counted twice, once
    whole and once for the kernels it calls, would not)."""
    bench = load_benchmark_models()
    shape = bench.Shape("tiny", 32, 8, 3, 64, 2, 2, 128, 10, 8)
    step = bench.make_step(bench.build_model("ours", shape), shape, "train", "bf16")
    step()
    split = bench.time_split(step, steps=1)
    assert list(split) == list(bench.TIME_SPLIT_KEYS)
    for group in bench.OP_GROUPS:
        assert split[group] > 0, group
    assert split["outside kernels"] >= 0

    infer = bench.make_step(bench.build_model("ours", shape), shape, "infer", "fp32")
    split = bench.time_split(infer, steps=1)  # inference: composite ops (linear, layer_norm) reach the clock whole
    for group in ("matmul", "gelu", "layer norm"):
        assert split[group] > 0, group


def test_benchmark_report_bounds_the_speed_up_by_our_matrix_products(tmp_path):
    """The bound table: the best peer's median step over our matrix products' time, as the JSON has them."""
    bench = load_benchmark_models()
    bench.main(["--shapes", "fmnist", "--models", "ours", "hf-eager", "timm", "--modes", "train", "--dtypes", "bf16",
                "--repeats", "1", "--warmup", "1", "--quiet_wait", "0", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "models.json").read_text())
    cells = {c["model"]: c for c in results["cells"]}
    best = min(("hf-eager", "timm"), key=cells["ours-plain"]["speedup"].get)  # the "vs best peer" column's
    ours = cells["ours-plain"]["time_split_ms"]
    rows = [line for line in (tmp_path / "models.md").read_text().splitlines() if line.startswith("| fmnist | bf16 | ")]
    bound_rows = [row for row in rows if row.endswith("x |")]
    assert len(bound_rows) == 1 and f"| {best} |" in bound_rows[0]  # ours-plain's: the recipe model is not like for like
    now, matmul_bound, kernels_bound = (float(v.strip().rstrip("x")) for v in bound_rows[0].strip("|").split("|")[3:])
    assert now == pytest.approx(cells["ours-plain"]["speedup"][best], abs=0.006)
    assert matmul_bound == pytest.approx(1e3 * cells[best]["seconds"][0] / ours["matmul"], abs=0.006)
    assert matmul_bound > kernels_bound > 0
    split_rows = [row for row in rows if "| ours-plain |" in row]
    assert len(split_rows) == 1 and f"| {ours['matmul']:.1f} |" in split_rows[0]


def test_benchmarks_run_as_modules_from_the_repository_root():
    """`python -m benchmarks.pipeline` finds benchmarks/models.py through the package, with no sys.path edits."""
    result = run_python(["-m", "benchmarks.pipeline", "--help"], timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--models_shapes" in result.stdout  # the model benchmark's options, added by the pipeline
