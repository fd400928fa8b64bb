"""timm's ViT families in: random-initialised timm peers built from each family's real model name (tiny widths and
depths, every other option the family's own) must give our model's outputs, in eval mode and float32, at the native
resolution and at another one; what our model cannot match is refused by name; a timm folder converts into one of
ours that the pipeline runs and training accepts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.layers import GluMlp
from timm.models import save_for_hf

from vit_finetune import ViTForImageClassification
from vit_finetune.convert import ModelLoadError, from_timm, load_pretrained_vit
from vit_finetune.convert import main as convert_main

TINY = dict(depth=2, embed_dim=32, num_heads=2, num_classes=5)

# (timm model name, overrides beyond TINY, what the import must have made of it)
FAMILIES = [
    ("vit_small_patch14_dinov2", {}, dict(layerscale_init=1e-5, pooling="cls", class_position_embedding=True)),
    ("vit_small_patch14_reg4_dinov2", {}, dict(num_register_tokens=4, class_position_embedding=False)),
    ("vit_giant_patch14_dinov2", dict(embed_dim=48), dict(mlp_type="glu", hidden_act="silu")),  # SwiGLUPacked
    ("vit_small_patch16_dinov3", {}, dict(rotary_embedding="dinov3", position_embedding="none", pooling="mean",
                                          num_register_tokens=4, qkv_bias=False, layer_norm_eps=1e-5)),
    ("vit_small_patch16_dinov3_qkvb", dict(global_pool="token"), dict(rotary_embedding="dinov3", key_bias=False,
                                                                     qkv_bias=True, pooling="cls")),
    ("vit_huge_plus_patch16_dinov3", dict(embed_dim=40, mlp_ratio=2.9), dict(mlp_type="glu", intermediate_size=120)),
    ("vit_base_patch16_siglip_224", {}, dict(class_token=False, pooling="map", hidden_act="gelu")),
    ("vit_base_patch16_siglip_256.v2_webli", {}, dict(class_token=False, pooling="map")),  # SigLIP 2
    ("vit_so400m_patch16_siglip_256", {}, dict(pooling="map", hidden_act="gelu_pytorch_tanh")),
    ("vit_base_patch16_siglip_gap_224", {}, dict(class_token=False, pooling="mean", fc_norm=False)),
    ("vit_base_patch16_clip_quickgelu_224", {}, dict(norm_pre=True, hidden_act="quick_gelu", layer_norm_eps=1e-5)),
    ("vit_base_patch16_clip_224", {}, dict(norm_pre=True, hidden_act="gelu")),
    ("deit3_small_patch16_224", {}, dict(layerscale_init=1e-6, class_position_embedding=False)),
    ("vit_medium_patch16_reg4_gap_256", {}, dict(num_register_tokens=4, pooling="mean", fc_norm=True)),
    # VisionTransformer options beyond the named families: registers with position rows, qk_norm, a GeGLU MLP
    ("vit_base_patch16_224", dict(qk_norm=True, reg_tokens=2), dict(qk_norm=True, num_register_tokens=2,
                                                                   class_position_embedding=True)),
    ("vit_base_patch16_224", dict(mlp_layer=GluMlp), dict(mlp_type="glu", hidden_act="gelu", intermediate_size=64)),
    ("eva02_tiny_patch14_224", {}, dict(rotary_embedding="eva02", rotary_reference_grid=16, mlp_type="glu",
                                        mlp_norm=False, key_bias=False, pooling="mean", fc_norm=True)),
    ("eva02_base_patch14_224", {}, dict(rotary_embedding="eva02", mlp_norm=True, key_bias=False)),  # qkv_fused=False
]


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter moved well away from timm's initialisation (zero biases and tokens, LayerScale 1e-5), so that
    a weight mapped to the wrong place shows in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def timm_peer(name: str, overrides: dict, seed: int = 0) -> torch.nn.Module:
    probe = timm.create_model(name, pretrained=False, depth=1, embed_dim=32, num_heads=2)
    patch = probe.patch_embed.patch_size[0]
    options = {**TINY, "img_size": 3 * patch, "dynamic_img_size": True, **overrides}
    return randomise(timm.create_model(name, pretrained=False, **options), seed)


def max_diffs(source: torch.nn.Module, ours: ViTForImageClassification, height: int, width: int) -> dict[str, float]:
    pixels = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * 1000 + width))
    other = (height, width) != tuple(source.patch_embed.img_size)
    with torch.no_grad():
        features = source.forward_features(pixels)
        pooled = source.forward_head(features, pre_logits=True)
        logits = source(pixels)
        outputs = ours.vit(pixels, interpolate_pos_encoding=other)
        our_logits = ours(pixels, interpolate_pos_encoding=other).logits
    assert outputs.last_hidden_state.shape == features.shape
    return {
        "last_hidden_state": (outputs.last_hidden_state - features).abs().max().item(),
        "pooled": (outputs.pooler_output - pooled).abs().max().item(),
        "logits": (our_logits - logits).abs().max().item(),
    }


@pytest.mark.parametrize("name,overrides,expected", FAMILIES,
                         ids=[f"{name}[{','.join(extra)}]" if "embed_dim" not in extra and extra else name
                              for name, extra, _ in FAMILIES])
def test_timm_family_matches_at_two_resolutions(name, overrides, expected):
    torch.manual_seed(0)
    source = timm_peer(name, overrides)
    ours = from_timm(source).eval()
    config = ours.config
    for key, value in expected.items():
        assert getattr(config, key) == value, (key, getattr(config, key), value)
    patch = config.patch_size
    assert config.image_size == 3 * patch and config.num_labels == 5
    native = max_diffs(source, ours, 3 * patch, 3 * patch)
    other = max_diffs(source, ours, 4 * patch, 5 * patch)  # another, non-square patch grid
    print(f"{name}: native {max(native.values()):.1e}, 4x5 grid {max(other.values()):.1e}")
    for where, diffs in (("native", native), ("4x5 grid", other)):
        for output, diff in diffs.items():
            assert diff < 1e-4, f"{name} {output} at the {where} resolution differs by {diff:.2e}"


def test_a_timm_model_built_for_its_size_matches_too():
    """The peers above are dynamic-size models; a fixed-size timm model (the default) is the same import."""
    fixed = randomise(timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=42, **TINY), 3)
    ours = from_timm(fixed).eval()
    pixels = torch.randn(2, 3, 42, 42)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).logits, fixed(pixels), atol=1e-4, rtol=1e-4)


def test_a_new_resolution_on_import_is_timm_resampling():
    """`image_size=` on import resamples the table once as timm does at run time (bicubic with antialias)."""
    source = timm_peer("deit3_small_patch16_224", {}, seed=4)
    ours = from_timm(source, image_size=80).eval()
    pixels = torch.randn(2, 3, 80, 80)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).logits, source(pixels), atol=1e-4, rtol=1e-4)


def _eva(**options):
    from timm.models.eva import Eva

    return Eva(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=0, **options)


@pytest.mark.parametrize("build,feature", [
    (lambda: timm.create_model("eva02_base_patch16_clip_224", pretrained=False, depth=1, embed_dim=32, num_heads=2),
     "scale_attn_inner"),
    (lambda: _eva(use_rot_pos_emb=True, rope_type="mixed"), "rope mixed"),
    (lambda: _eva(use_rot_pos_emb=True, rope_type="cat", rope_rotate_half=True), "rope_rotate_half"),
    (lambda: _eva(use_rot_pos_emb=True, rope_type="dinov3", rope_grid_indexing="xy", rope_rotate_half=True),
     "rope_grid_indexing='xy'"),
    (lambda: _eva(init_values=0.1, attn_only_layer_scale=True), "attn_only_layer_scale"),
    (lambda: _eva(use_post_norm=True), "use_post_norm"),
    (lambda: timm.create_model("vit_base_patch16_rpn_224", pretrained=False, depth=1), "ResPostBlock"),
    (lambda: timm.create_model("vit_so150m_patch16_reg4_map_256", pretrained=False, depth=1, embed_dim=32,
                               num_heads=2), "attention pooling over the patch tokens only"),
    (lambda: timm.create_model("vit_base_patch16_224", pretrained=False, depth=1, scale_attn_norm=True),
     "scale_attn_norm"),
    (lambda: timm.create_model("vit_base_patch16_224", pretrained=False, depth=1, global_pool="avgmax"),
     "global_pool='avgmax'"),
    (lambda: timm.create_model("vit_base_patch16_224", pretrained=False, depth=1, final_norm=False),
     "no final norm"),
    (lambda: timm.create_model("test_vit4", pretrained=False), "RmsNorm"),
], ids=["eva_attention_sub_ln", "rope_mixed", "cat_rope_halves", "xy_grid", "attn_only_layerscale", "post_norm",
        "res_post_block", "map_over_patches_only", "scale_attn_norm", "avgmax", "no_final_norm", "rms_norm"])
def test_what_our_model_cannot_match_is_refused_by_name(build, feature):
    with pytest.raises(ValueError, match="cannot be imported exactly") as error:
        from_timm(build())
    assert feature in str(error.value)


# ----------------------------------------------------------------------------------------------------------
# A timm folder (timm's save_for_hf) through `vit-finetune convert`, the pipeline and training


def test_convert_a_timm_dinov3_folder_for_the_pipeline_and_training(tmp_path):
    import transformers
    from training_fixtures import TINY_MODEL, tiny_args, write_dataset

    from vit_finetune.train import main as train_main

    source = randomise(timm.create_model("vit_small_patch16_dinov3", pretrained=False, img_size=32, depth=2,
                                         embed_dim=32, num_heads=2, num_classes=3), 5)
    timm_dir, ours_dir = tmp_path / "timm_dinov3", tmp_path / "ours"
    save_for_hf(source, timm_dir, safe_serialization=True)
    assert {p.name for p in timm_dir.iterdir()} == {"config.json", "model.safetensors"}
    assert convert_main([str(timm_dir), str(ours_dir)]) == 0

    ours = ViTForImageClassification.from_pretrained(ours_dir).eval()
    assert (ours.config.rotary_embedding, ours.config.num_register_tokens, ours.config.image_size) == ("dinov3", 4, 32)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).logits, source(pixels), atol=1e-4, rtol=1e-4)

    # The processor is timm's evaluation transform: same statistics, crop and resize (up to the two libraries'
    # resampling kernels), from an image whose crop margins are even.
    processor = json.loads((ours_dir / "preprocessor_config.json").read_text())
    # (at the model's 32 px: timm's pretrained config keeps DINOv3's 256 for this dynamic-size model)
    data_config = {**timm.data.resolve_model_data_config(source), "input_size": (3, 32, 32)}
    assert processor["image_mean"] == pytest.approx(list(data_config["mean"]))
    assert processor["image_std"] == pytest.approx(list(data_config["std"]))
    assert processor["crop_size"] == {"height": 32, "width": 32} and processor["size"] == {"shortest_edge": 32}
    gradient = np.linspace(0, 255, 80)[None, :, None] * np.linspace(0.2, 1, 40)[:, None, None]
    image = Image.fromarray(np.repeat(gradient, 3, axis=2).astype(np.uint8))
    expected = timm.data.create_transform(**data_config)(image)
    from transformers import AutoImageProcessor

    got = AutoImageProcessor.from_pretrained(ours_dir)(image, return_tensors="pt").pixel_values[0]
    assert got.shape == expected.shape and (got - expected).abs().mean() < 0.02

    classify = transformers.pipeline("image-classification", model=str(ours_dir), trust_remote_code=True)
    predictions = classify(image, top_k=3)
    assert len(predictions) == 3 and {p["label"] for p in predictions} == set(ours.config.id2label.values())

    data = write_dataset(tmp_path / "images", train_per_class=2, validation_per_class=1, test_per_class=1)
    argv = tiny_args(data, tmp_path / "finetuned", model_name_or_path=ours_dir, max_steps=1, test_dir=None,
                     per_device_train_batch_size=2, **{k: None for k in TINY_MODEL})
    assert train_main(argv) == 0
    finetuned = json.loads((tmp_path / "finetuned" / "config.json").read_text())
    assert finetuned["rotary_embedding"] == "dinov3" and len(finetuned["id2label"]) == 3


def test_a_timm_folder_loads_by_path_and_refuses_pickled_weights(tmp_path):
    source = randomise(timm.create_model("vit_base_patch16_siglip_224", pretrained=False, img_size=32, **TINY), 6)
    folder = tmp_path / "siglip"
    save_for_hf(source, folder, safe_serialization=True)
    ours = load_pretrained_vit(str(folder)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).logits, source(pixels), atol=1e-4, rtol=1e-4)

    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="without model.safetensors"):
        load_pretrained_vit(str(folder))


@pytest.mark.parametrize("name,size,expected", [
    ("timm/vit_base_patch16_siglip_224.v2_webli", 224, dict(image_mean=[0.5] * 3, shortest_edge=248, resample=3)),
    ("timm/vit_small_patch14_reg4_dinov2.lvd142m", 518, dict(image_mean=[0.485, 0.456, 0.406], shortest_edge=518)),
    ("timm/eva02_base_patch14_224.mim_in22k", 224, dict(image_mean=[0.48145466, 0.4578275, 0.40821073],
                                                        shortest_edge=248)),
])
def test_the_processor_of_a_timm_id_is_its_data_config_without_a_download(name, size, expected):
    from vit_finetune.configuration_vit import ViTConfig
    from vit_finetune.convert import timm_image_processor

    processor = timm_image_processor(name, ViTConfig(image_size=size, patch_size=14 if size % 16 else 16)).to_dict()
    assert processor["image_mean"] == pytest.approx(expected["image_mean"])
    assert processor["size"] == {"shortest_edge": expected["shortest_edge"]}
    assert processor["crop_size"] == {"height": size, "width": size} and processor["do_center_crop"]
    assert processor.get("resample", 3) == expected.get("resample", 3)


def test_a_state_dict_alone_is_read_for_plain_vits_only():
    from vit_finetune.convert import config_from_timm_state_dict

    registers = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=28, **TINY)
    with pytest.raises(ValueError, match="describes only a plain ViT .*reg_token.*pass it to from_timm"):
        from_timm(registers.state_dict())
    clip = timm.create_model("vit_base_patch16_clip_224", pretrained=False, img_size=32, **TINY).state_dict()
    with pytest.raises(ValueError, match="norm_pre"):
        config_from_timm_state_dict(clip, num_attention_heads=2)
