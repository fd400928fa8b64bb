"""Official weights in: random-initialised transformers and timm ViTs must give the same outputs after import."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import timm
import torch
import transformers
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer

from vit_finetune import ViTForImageClassification
from vit_finetune.convert import (
    ModelLoadError,
    config_from_timm_state_dict,
    from_timm,
    from_transformers,
    load_pretrained_vit,
)

# (image_size, patch_size, hidden_size, layers, heads, qkv_bias)
SHAPES = [(32, 8, 32, 2, 2, True), (48, 16, 64, 3, 4, True), (32, 4, 48, 2, 3, False)]


def hf_config(image_size, patch_size, hidden, layers, heads, qkv_bias, **extra):
    return transformers.ViTConfig(
        image_size=image_size, patch_size=patch_size, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=2 * hidden, qkv_bias=qkv_bias, **extra,
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_transformers_classifier_in_memory(shape, attn_implementation):
    torch.manual_seed(0)
    config = hf_config(*shape, num_labels=5)
    config._attn_implementation = attn_implementation
    source = transformers.ViTForImageClassification(config).eval()
    assert source.config._attn_implementation == attn_implementation
    ours = from_transformers(source).eval()
    pixels = torch.randn(3, 3, shape[0], shape[0])
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).logits, source(pixels).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_transformers_checkpoint_on_disk(tmp_path, shape):
    torch.manual_seed(1)
    labels = {0: "ant", 1: "bee", 2: "wasp"}
    source = transformers.ViTForImageClassification(hf_config(*shape, id2label=labels)).eval()
    source.save_pretrained(tmp_path)
    # The checkpoint on disk uses the legacy names, not the in-memory ones: both must be understood.
    on_disk = load_file(tmp_path / "model.safetensors")
    assert any(".encoder.layer.0.attention.attention.query." in key for key in on_disk)
    ours = load_pretrained_vit(str(tmp_path)).eval()
    assert ours.config.id2label == labels
    pixels = torch.randn(2, 3, shape[0], shape[0])
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).logits, source(pixels).logits, atol=1e-4, rtol=1e-4)


def test_transformers_backbone_without_head(tmp_path):
    torch.manual_seed(2)
    source = transformers.ViTModel(hf_config(*SHAPES[0]), add_pooling_layer=True).eval()
    source.save_pretrained(tmp_path)
    for ours in (from_transformers(source, num_labels=4), load_pretrained_vit(str(tmp_path), num_labels=4)):
        ours.eval()
        pixels = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            expected = source(pixels).last_hidden_state
            got = ours.vit(pixels).last_hidden_state
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
            assert ours(pixels).logits.shape == (2, 4)


def test_new_labels_reinitialise_only_the_head(caplog):
    torch.manual_seed(3)
    source = transformers.ViTForImageClassification(hf_config(*SHAPES[0], num_labels=5)).eval()
    with caplog.at_level(logging.WARNING):
        ours = from_transformers(source, id2label={0: "a", 1: "b"}).eval()
    assert "head is newly initialised" in caplog.text
    assert ours.config.num_labels == 2 and ours.classifier.weight.shape == (2, 32)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            ours.vit(pixels).last_hidden_state, source.vit(pixels).last_hidden_state, atol=1e-4, rtol=1e-4
        )


def test_the_source_labels_keep_its_head_and_any_other_set_replaces_it(caplog):
    """The head is the source's unless the labels asked for differ from its own, even in name only: then, as the
    training code does, the model's reset_classifier gives a fresh one (no head at all for an empty label set)."""
    torch.manual_seed(10)
    labels = {0: "ant", 1: "bee", 2: "wasp"}
    source = transformers.ViTForImageClassification(hf_config(*SHAPES[0], id2label=labels)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = source(pixels).logits
        same = from_transformers(source, id2label=dict(labels)).eval()
        torch.testing.assert_close(same(pixels).logits, expected, atol=1e-4, rtol=1e-4)
        with caplog.at_level(logging.WARNING):
            renamed = from_transformers(source, id2label={0: "x", 1: "y", 2: "z"}).eval()
        assert "head is newly initialised" in caplog.text
        assert renamed.config.id2label == {0: "x", 1: "y", 2: "z"} and renamed.config.label2id["z"] == 2
        assert not torch.allclose(renamed.classifier.weight, source.classifier.weight)
        torch.testing.assert_close(renamed.vit(pixels).pooler_output, same.vit(pixels).pooler_output)
        headless = from_transformers(source, num_labels=0)
        assert isinstance(headless.classifier, torch.nn.Identity) and headless.classifier_keys() == set()


def test_other_resolution_matches_transformers_interpolation():
    torch.manual_seed(4)
    source = transformers.ViTForImageClassification(hf_config(*SHAPES[0], num_labels=3)).eval()
    ours = from_transformers(source, image_size=48).eval()
    assert ours.config.image_size == 48
    assert ours.vit.embeddings.position_embeddings.shape == (1, 1 + 36, 32)
    pixels = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        expected = source(pixels, interpolate_pos_encoding=True).logits
        torch.testing.assert_close(ours(pixels).logits, expected, atol=1e-4, rtol=1e-4)


def timm_vit(image_size, patch_size, hidden, layers, heads, qkv_bias, **extra):
    return VisionTransformer(
        img_size=image_size, patch_size=patch_size, embed_dim=hidden, depth=layers, num_heads=heads,
        mlp_ratio=2.0, qkv_bias=qkv_bias, **extra,
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("num_classes", [0, 7])
def test_timm_model(shape, num_classes):
    torch.manual_seed(5)
    source = timm_vit(*shape, num_classes=num_classes).eval()
    ours = from_timm(source).eval()
    pixels = torch.randn(2, 3, shape[0], shape[0])
    with torch.no_grad():
        if num_classes:
            torch.testing.assert_close(ours(pixels).logits, source(pixels), atol=1e-4, rtol=1e-4)
        else:
            torch.testing.assert_close(
                ours.vit(pixels).last_hidden_state, source.forward_features(pixels), atol=1e-4, rtol=1e-4
            )


def test_timm_layerscale_and_named_model():
    torch.manual_seed(6)
    source = timm_vit(*SHAPES[0], num_classes=3, init_values=0.1).eval()
    ours = from_timm(source).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).logits, source(pixels), atol=1e-4, rtol=1e-4)
    # A registry model (random weights: pretrained=False), as users name them.
    named = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4).eval()
    ours = load_pretrained_vit(named).eval()
    assert ours.config.hidden_size == 192 and ours.config.num_attention_heads == 3
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).logits, named(pixels), atol=1e-4, rtol=1e-4)


def test_timm_state_dict_alone():
    torch.manual_seed(7)
    source = timm_vit(*SHAPES[1], num_classes=6).eval()
    state_dict = source.state_dict()
    config = config_from_timm_state_dict(state_dict, num_attention_heads=4)
    assert (config.image_size, config.patch_size, config.num_hidden_layers, config.num_labels) == (48, 16, 3, 6)
    ours = from_timm(state_dict, num_attention_heads=4).eval()
    pixels = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).logits, source(pixels), atol=1e-4, rtol=1e-4)


def test_unsupported_timm_variant_is_named():
    # Average pooling with fc_norm is supported now (tests/test_convert_timm_families.py); max pooling is not.
    source = timm_vit(*SHAPES[0], num_classes=3, global_pool="max")
    with pytest.raises(ValueError, match="global_pool='max'"):
        from_timm(source)


def test_not_a_vit_folder_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "resnet"}')
    with pytest.raises(ValueError, match="model_type 'resnet'"):
        load_pretrained_vit(str(tmp_path))
    with pytest.raises(ModelLoadError, match="missing_dir_is_not_a_hub_id/x: no such folder"):
        load_pretrained_vit(str(tmp_path / "missing_dir_is_not_a_hub_id" / "x"))


def test_convert_command_writes_a_folder_of_ours(tmp_path):
    torch.manual_seed(8)
    source_dir, out_dir = tmp_path / "hf", tmp_path / "ours"
    source = transformers.ViTForImageClassification(hf_config(*SHAPES[0], num_labels=3)).eval()
    source.save_pretrained(source_dir)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(source_dir)
    result = subprocess.run(
        [sys.executable, "-m", "vit_finetune.cli", "convert", str(source_dir), str(out_dir)],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert {"config.json", "model.safetensors", "modeling_vit.py", "preprocessor_config.json"} <= {
        p.name for p in out_dir.iterdir()
    }
    ours = ViTForImageClassification.from_pretrained(out_dir).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).logits, source(pixels).logits, atol=1e-4, rtol=1e-4)

    bad = subprocess.run(
        [sys.executable, "-m", "vit_finetune.cli", "convert", str(tmp_path / "nothing"), str(tmp_path / "o")],
        capture_output=True, text=True, timeout=180, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"vit-finetune convert: error: {tmp_path / 'nothing'}: no such folder"


def test_hub_id_downloads_through_huggingface_hub(tmp_path):
    """A Hub id takes the real download path (snapshot_download), served by the local Hub stand-in."""
    import textwrap

    from hub_server import LocalHub, hub_client_env

    torch.manual_seed(9)
    source = transformers.ViTForImageClassification(hf_config(*SHAPES[0], num_labels=3)).eval()
    folder = tmp_path / "source"
    source.save_pretrained(folder)
    pixels = torch.randn(2, 3, 32, 32)
    torch.save(pixels, tmp_path / "pixels.pt")
    with LocalHub(tokens={"google-token": "google"}) as hub:
        hub.add_repo("google/vit-tiny-test", owner="google",
                     files={p.name: p.read_bytes() for p in folder.iterdir()})
        script = textwrap.dedent(f"""
            import torch
            from vit_finetune.convert import load_pretrained_vit
            model = load_pretrained_vit("google/vit-tiny-test").eval()
            pixels = torch.load({str(tmp_path / "pixels.pt")!r}, weights_only=True)
            with torch.no_grad():
                torch.save(model(pixels).logits, {str(tmp_path / "logits.pt")!r})
        """)
        env = hub_client_env(hub.endpoint, str(tmp_path / "hf_home"), token=None)
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]
        assert any("google/vit-tiny-test" in path for path in hub.paths_requested("GET"))
    with torch.no_grad():
        expected = source(pixels).logits
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt", weights_only=True), expected, atol=1e-4, rtol=1e-4)
