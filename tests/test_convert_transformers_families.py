"""The transformers families in: random-initialised DINOv2 (with registers), DINOv3, SigLIP (2), CLIP, DeiT and ViT-MAE
peers, built with each family's real options (registers, LayerScale, SwiGLU / gated MLPs, key without bias, norm_pre,
attention pooling, activations and epsilons), must give our model's outputs to 1e-4 in float32, in memory and from a
saved folder, at the native resolution and at another one."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import transformers
from training_fixtures import TINY_MODEL, tiny_args, write_dataset

from vit_finetune.convert import (
    ModelLoadError,
    from_clip,
    from_deit,
    from_transformers_family,
    load_pretrained_vit,
    source_image_processor,
)
from vit_finetune.convert import main as convert_main
from vit_finetune.convert.transformers_dinov2 import state_dict_from_dinov2
from vit_finetune.convert.transformers_families import stock_image_processor

TOLERANCE = 1e-4
# Small shapes of the real configurations: 2 layers, width 64, 4 heads.
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter moved off its initial value (zero biases, unit norms, zero tokens and registers): a weight
    mapped to the wrong place, or not at all, then changes the outputs."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model.eval()


def naflex_patches(pixels: torch.Tensor, patch: int) -> dict[str, torch.Tensor]:
    """SigLIP 2's NaFlex inputs for whole images: (p, p, C)-flattened patches, no padding."""
    batch, channels, height, width = pixels.shape
    flat = pixels.reshape(batch, channels, height // patch, patch, width // patch, patch)
    flat = flat.permute(0, 2, 4, 3, 5, 1).reshape(batch, -1, patch * patch * channels)
    return dict(pixel_values=flat, pixel_attention_mask=torch.ones(batch, flat.shape[1], dtype=torch.long),
                spatial_shapes=torch.tensor([[height // patch, width // patch]] * batch))


@dataclass
class Case:
    name: str
    build: Callable[[], torch.nn.Module]
    # (source model, pixels) -> {"last_hidden_state": ..., "logits" or "pooled": ...}
    reference: Callable[[torch.nn.Module, torch.Tensor], dict[str, torch.Tensor]]
    native: int
    other: int


def backbone_outputs(output) -> dict[str, torch.Tensor]:
    return {"last_hidden_state": output.last_hidden_state, "pooled": output.pooler_output}


def classifier_outputs(model, backbone, pixels, **kwargs) -> dict[str, torch.Tensor]:
    return {"last_hidden_state": backbone(pixels, **kwargs).last_hidden_state, "logits": model(pixels, **kwargs).logits}


CASES = [
    Case("dinov2_classifier",  # Dinov2ForImageClassification: cls_mean pooling with its head; LayerScale
         lambda: transformers.Dinov2ForImageClassification(transformers.Dinov2Config(
             image_size=56, patch_size=14, mlp_ratio=4, layerscale_value=1.0, layer_norm_eps=1e-6, hidden_act="gelu",
             num_labels=3, **SMALL)),
         lambda m, x: classifier_outputs(m, m.dinov2, x), 56, 42),
    Case("dinov2_swiglu_backbone",  # DINOv2-giant's SwiGLU FFN; Dinov2Model's pooler is the CLS token
         lambda: transformers.Dinov2Model(transformers.Dinov2Config(
             image_size=56, patch_size=14, use_swiglu_ffn=True, layerscale_value=1.0, **SMALL)),
         lambda m, x: backbone_outputs(m(x)), 56, 42),
    Case("dinov2_registers_classifier",  # 4 registers, antialiased bicubic table resize
         lambda: transformers.Dinov2WithRegistersForImageClassification(transformers.Dinov2WithRegistersConfig(
             image_size=56, patch_size=14, num_register_tokens=4, layerscale_value=1.0, num_labels=3, **SMALL)),
         lambda m, x: classifier_outputs(m, m.dinov2_with_registers, x), 56, 42),
    Case("dinov3_small",  # DINOv3 ViT-S/16: RoPE (theta 100), 4 registers, no key bias, LayerScale, eps 1e-5
         lambda: transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(
             image_size=64, patch_size=16, intermediate_size=256, num_register_tokens=4, rope_theta=100.0,
             query_bias=True, key_bias=False, value_bias=True, layerscale_value=1.0, layer_norm_eps=1e-5,
             hidden_act="gelu", **SMALL)),
         lambda m, x: backbone_outputs(m(x)), 64, 48),
    Case("dinov3_gated",  # DINOv3 ViT-H+: gated MLP with silu; here also bias-less MLP
         lambda: transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(
             image_size=64, patch_size=16, intermediate_size=96, num_register_tokens=4, use_gated_mlp=True,
             hidden_act="silu", mlp_bias=False, layerscale_value=1.0, **SMALL)),
         lambda m, x: backbone_outputs(m(x)), 64, 48),
    Case("siglip_vision",  # SigLIP: no CLS, patch-only table, MAP head, gelu_pytorch_tanh, eps 1e-6
         lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
             image_size=64, patch_size=16, intermediate_size=256, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
             **SMALL)),
         lambda m, x: backbone_outputs(m(x, interpolate_pos_encoding=True)), 64, 48),
    Case("siglip_full",  # the vision tower of a full SigLIP checkpoint
         lambda: transformers.SiglipModel(transformers.SiglipConfig(
             vision_config=dict(image_size=64, patch_size=16, intermediate_size=256, **SMALL),
             text_config=dict(vocab_size=32, max_position_embeddings=8, intermediate_size=64, **SMALL))),
         lambda m, x: backbone_outputs(m.vision_model(x, interpolate_pos_encoding=True)), 64, 48),
    Case("siglip_classifier",  # SiglipForImageClassification: mean over all tokens, its head
         lambda: transformers.SiglipForImageClassification(transformers.SiglipConfig(
             vision_config=dict(image_size=64, patch_size=16, intermediate_size=256, **SMALL),
             text_config=dict(vocab_size=32, max_position_embeddings=8, intermediate_size=64, **SMALL),
             num_labels=3)),
         lambda m, x: classifier_outputs(m, m.vision_model, x, interpolate_pos_encoding=True), 64, 48),
    Case("siglip2_vision",  # SigLIP 2 NaFlex: Linear patch embedding, bilinear-antialias table resize, MAP head
         lambda: transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(
             num_patches=16, patch_size=16, intermediate_size=256, hidden_act="gelu_pytorch_tanh", **SMALL)),
         lambda m, x: backbone_outputs(m(**naflex_patches(x, 16))), 64, 48),
    Case("siglip2_full",
         lambda: transformers.Siglip2Model(transformers.Siglip2Config(
             vision_config=dict(num_patches=16, patch_size=16, intermediate_size=256, **SMALL),
             text_config=dict(vocab_size=32, max_position_embeddings=8, intermediate_size=64, **SMALL))),
         lambda m, x: backbone_outputs(m.vision_model(**naflex_patches(x, 16))), 64, 48),
    Case("clip_vision",  # CLIP: bias-less patch conv, norm_pre, post_layernorm on the CLS token, quick_gelu, eps 1e-5
         lambda: transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
             image_size=64, patch_size=16, intermediate_size=256, hidden_act="quick_gelu", layer_norm_eps=1e-5,
             **SMALL)),
         lambda m, x: backbone_outputs(m(x, interpolate_pos_encoding=True)), 64, 48),
    Case("clip_full",  # the vision tower of a full CLIP checkpoint (projections left out)
         lambda: transformers.CLIPModel(transformers.CLIPConfig(
             vision_config=dict(image_size=64, patch_size=16, intermediate_size=256, **SMALL),
             text_config=dict(vocab_size=32, max_position_embeddings=8, intermediate_size=64, **SMALL),
             projection_dim=16)),
         lambda m, x: backbone_outputs(m.vision_model(x, interpolate_pos_encoding=True)), 64, 48),
    Case("deit_classifier",  # the distillation token becomes a register token (plus its position row)
         lambda: transformers.DeiTForImageClassification(transformers.DeiTConfig(
             image_size=64, patch_size=16, intermediate_size=256, layer_norm_eps=1e-12, num_labels=3, **SMALL)),
         lambda m, x: classifier_outputs(m, m.deit, x, interpolate_pos_encoding=True), 64, 48),
    Case("vit_mae_encoder",  # MAE's encoder without masking: mask_ratio 0 and no shuffle in the peer
         lambda: transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(
             image_size=64, patch_size=16, intermediate_size=256, mask_ratio=0.0, decoder_hidden_size=32,
             decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64, **SMALL)),
         lambda m, x: {"last_hidden_state": m.vit(
             x, noise=torch.arange((x.shape[-1] // 16) ** 2).float().expand(x.shape[0], -1),
             interpolate_pos_encoding=True).last_hidden_state}, 64, 48),
]


def our_outputs(model, pixels: torch.Tensor, keys, native: int) -> dict[str, torch.Tensor]:
    interpolate = pixels.shape[-1] != native
    out = model.vit(pixels, interpolate_pos_encoding=interpolate)
    result = {"last_hidden_state": out.last_hidden_state, "pooled": out.pooler_output}
    if "logits" in keys:
        result["logits"] = model(pixels, interpolate_pos_encoding=interpolate).logits
    return {key: result[key] for key in keys}


def max_diffs(source, ours, case: Case) -> dict[int, float]:
    """The largest |difference| over every compared output, per resolution."""
    diffs = {}
    for size in (case.native, case.other):
        pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            expected = case.reference(source, pixels)
            got = our_outputs(ours, pixels, expected.keys(), case.native)
        diffs[size] = 0.0
        for key, value in expected.items():
            assert got[key].shape == value.shape, f"{case.name} {key}: {got[key].shape} vs {value.shape}"
            assert value.abs().max() > 1e-3, f"{case.name} {key}: the reference is degenerate"
            diffs[size] = max(diffs[size], (got[key] - value).abs().max().item())
    return diffs


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_family_matches_in_memory_and_from_a_saved_folder(case: Case, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = perturbed(case.build())
    ours = from_transformers_family(source).eval()
    diffs = max_diffs(source, ours, case)
    assert max(diffs.values()) <= TOLERANCE, f"{case.name} in memory: {diffs}"
    # The in-memory dispatch of load_pretrained_vit, and the folder / model_type route (stock class, then memory).
    assert load_pretrained_vit(source).state_dict().keys() == ours.state_dict().keys()
    source.save_pretrained(tmp_path)
    from_folder = load_pretrained_vit(str(tmp_path)).eval()
    folder_diffs = max_diffs(source, from_folder, case)
    assert max(folder_diffs.values()) <= TOLERANCE, f"{case.name} from its folder: {folder_diffs}"
    if hasattr(source, "classifier"):
        assert from_folder.config.id2label == {int(k): v for k, v in source.config.id2label.items()}
    print(f"{case.name}: max |diff| {diffs} in memory, {folder_diffs} from the folder")


def test_our_options_are_the_families_features() -> None:
    """The features that make each family what it is reach our config (not just equal outputs by chance)."""
    torch.manual_seed(0)
    configs = {case.name: from_transformers_family(case.build()).config for case in CASES}
    assert configs["dinov2_classifier"].pooling == "cls_mean" and configs["dinov2_classifier"].layerscale_init == 1.0
    swiglu = configs["dinov2_swiglu_backbone"]
    assert swiglu.mlp_type == "glu" and swiglu.hidden_act == "silu"
    registers = configs["dinov2_registers_classifier"]
    assert registers.num_register_tokens == 4 and registers.position_interpolation == "bicubic_antialias"
    dinov3 = configs["dinov3_small"]
    assert (dinov3.rotary_embedding, dinov3.position_embedding, dinov3.key_bias) == ("dinov3", "none", False)
    assert configs["siglip_vision"].pooling == "map" and not configs["siglip_vision"].class_token
    assert configs["siglip_classifier"].pooling == "mean"
    assert configs["siglip2_vision"].position_interpolation == "bilinear_antialias"
    assert configs["siglip2_vision"].image_size == 64
    clip = configs["clip_vision"]
    assert clip.norm_pre and clip.fc_norm and clip.hidden_act == "quick_gelu"
    assert configs["deit_classifier"].num_register_tokens == 1


def test_deit_distillation_token_is_the_register_plus_its_position_row() -> None:
    source = perturbed(transformers.DeiTModel(transformers.DeiTConfig(image_size=32, patch_size=16, **SMALL,
                                                                      intermediate_size=128)))
    ours = from_deit(source)
    embeddings = source.embeddings
    expected = embeddings.distillation_token + embeddings.position_embeddings[:, 1:2]
    torch.testing.assert_close(ours.vit.embeddings.register_tokens, expected, rtol=0, atol=0)
    table = torch.cat([embeddings.position_embeddings[:, :1], embeddings.position_embeddings[:, 2:]], dim=1)
    torch.testing.assert_close(ours.vit.embeddings.position_embeddings, table, rtol=0, atol=0)


def test_unrepresentable_classes_are_refused_by_name(tmp_path: Path) -> None:
    deit = transformers.DeiTConfig(image_size=32, patch_size=16, intermediate_size=128, num_labels=2, **SMALL)
    teacher = transformers.DeiTForImageClassificationWithTeacher(deit)
    with pytest.raises(ValueError, match="DeiTForImageClassificationWithTeacher.*average of two heads"):
        from_transformers_family(teacher)
    teacher.save_pretrained(tmp_path / "teacher")
    with pytest.raises(ModelLoadError, match="DeiTForImageClassificationWithTeacher"):
        load_pretrained_vit(str(tmp_path / "teacher"))
    # Fine-tuning on new labels replaces the head anyway: the distilled checkpoints' backbone is what a user wants.
    pixels = torch.randn(2, 3, 32, 32)
    ours = load_pretrained_vit(str(tmp_path / "teacher"), id2label={0: "a", 1: "b", 2: "c"}).eval()
    with torch.no_grad():
        expected = teacher.eval().deit(pixels).last_hidden_state
        torch.testing.assert_close(ours.vit(pixels).last_hidden_state, expected, atol=1e-4, rtol=1e-4)
    assert ours(pixels).logits.shape == (2, 3)
    clip = transformers.CLIPForImageClassification(transformers.CLIPConfig(
        vision_config=dict(image_size=32, patch_size=16, intermediate_size=128, **SMALL),
        text_config=dict(vocab_size=32, max_position_embeddings=8, intermediate_size=64, **SMALL), num_labels=2))
    with pytest.raises(ValueError, match="CLIPForImageClassification.*without a final LayerNorm"):
        from_clip(clip)


def test_a_weight_the_mapping_does_not_know_is_an_error() -> None:
    source = transformers.Dinov2Model(transformers.Dinov2Config(image_size=28, patch_size=14, **SMALL))
    state_dict = dict(source.state_dict(), **{"encoder.layer.0.attention.extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected dinov2 weight 'encoder.layer.0.attention.extra.weight'"):
        state_dict_from_dinov2(state_dict)


@pytest.mark.parametrize(("model_type", "processor", "resize", "crop"), [
    ("dinov2", "BitImageProcessor", {"shortest_edge": 256}, 224),
    ("dinov2_with_registers", "BitImageProcessor", {"shortest_edge": 256}, 224),
    ("dinov3_vit", "DINOv3ViTImageProcessor", {"height": 224, "width": 224}, None),
    ("siglip2_vision_model", "SiglipImageProcessor", {"height": 224, "width": 224}, None),
    ("clip", "CLIPImageProcessor", {"shortest_edge": 224}, 224),
    ("deit", "DeiTImageProcessor", {"height": 256, "width": 256}, 224),
])
def test_stock_image_processors_are_the_authors(model_type, processor, resize, crop, tmp_path: Path) -> None:
    stock = stock_image_processor(model_type, 224)
    assert type(stock).__name__.removesuffix("Fast") == processor
    stock.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert {key: value for key, value in saved["size"].items() if value is not None} == resize
    assert (saved.get("crop_size") or {}).get("height") == crop
    if model_type.startswith(("dinov", "deit")):
        assert saved["image_mean"] == [0.485, 0.456, 0.406] and saved["image_std"] == [0.229, 0.224, 0.225]


def test_a_source_folder_keeps_its_own_processor_at_the_new_resolution(tmp_path: Path) -> None:
    source = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(image_size=64, patch_size=16,
                                                                        intermediate_size=128, **SMALL))
    source.save_pretrained(tmp_path)
    transformers.CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64},
                                    image_mean=[0.1, 0.2, 0.3]).save_pretrained(tmp_path)
    model = load_pretrained_vit(str(tmp_path), image_size=96)
    processor = source_image_processor(str(tmp_path), model.config)
    assert list(processor.image_mean) == [0.1, 0.2, 0.3]
    assert processor.crop_size["height"] == 96 and processor.size["shortest_edge"] == 96


def test_convert_a_dinov2_classifier_folder_then_pipeline_and_training(tmp_path: Path) -> None:
    from PIL import Image

    from vit_finetune.train import main as train_main

    torch.manual_seed(0)
    labels = {0: "cat", 1: "dog", 2: "fox"}
    source = perturbed(transformers.Dinov2ForImageClassification(transformers.Dinov2Config(
        image_size=28, patch_size=14, id2label=labels, label2id={v: k for k, v in labels.items()}, **SMALL)))
    source.save_pretrained(tmp_path / "dinov2")
    converted = tmp_path / "converted"
    assert convert_main([str(tmp_path / "dinov2"), str(converted)]) == 0
    processor = json.loads((converted / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"].startswith("BitImageProcessor")
    assert processor["crop_size"]["height"] == 28 and processor["image_mean"] == [0.485, 0.456, 0.406]

    classifier = transformers.pipeline("image-classification", model=str(converted), trust_remote_code=True)
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    predictions = classifier(image, top_k=3)
    assert {p["label"] for p in predictions} == set(labels.values())
    # The pipeline's scores are the source's on the same pixels.
    pixels = classifier.image_processor(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = source(pixels).logits.softmax(-1)[0]
    best = max(predictions, key=lambda p: p["score"])
    assert abs(best["score"] - expected.max().item()) < 1e-4 and best["label"] == labels[expected.argmax().item()]

    data = write_dataset(tmp_path / "images", train_per_class=2, validation_per_class=1, test_per_class=1)
    output = tmp_path / "finetuned"
    argv = tiny_args(data, output, model_name_or_path=converted, max_steps=1, test_dir=None,
                     **{key: None for key in TINY_MODEL})
    assert train_main(argv) == 0
    config = json.loads((output / "config.json").read_text())
    assert config["pooling"] == "cls_mean" and config["patch_size"] == 14 and config["image_size"] == 28
