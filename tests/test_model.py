"""The model itself: config validation, forward paths, losses, save/load and loading without our package."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

import vit_finetune
import vit_finetune.modeling_vit as modeling
from vit_finetune import ViTConfig, ViTForImageClassification, ViTModel
from vit_finetune.modeling_vit import sincos_position_table

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, num_labels=3)


def tiny(**overrides) -> ViTConfig:
    return ViTConfig(**{**TINY, **overrides})


@pytest.mark.parametrize(
    "fields, field_name",
    [
        (dict(image_size=30), "image_size"),
        (dict(hidden_size=33), "hidden_size"),
        (dict(pooling="max"), "pooling"),
        (dict(position_embedding="rope"), "position_embedding"),
        (dict(patch_embedding="hybrid"), "patch_embedding"),
        (dict(hidden_act="swish2"), "hidden_act"),
        (dict(num_hidden_layers=0), "num_hidden_layers"),
        (dict(drop_path_rate=1.5), "drop_path_rate"),
        (dict(patch_embedding="conv", patch_size=6, image_size=36), "patch_size"),
        (dict(patch_embedding="conv", conv_stem_depth=0), "conv_stem_depth"),
        (dict(class_token=False), "pooling"),  # CLS pooling without a CLS token
        (dict(class_token=False, pooling="cls_mean"), "pooling"),
        (dict(fc_norm=True, pooling="map"), "fc_norm"),
        (dict(position_embedding="none"), "position_embedding"),  # no position information at all
        (dict(rotary_embedding="dinov3", hidden_size=36, num_attention_heads=2), "rotary_embedding"),  # head 18
        (dict(rotary_embedding="rope2d"), "rotary_embedding"),
        (dict(mlp_type="moe"), "mlp_type"),
        (dict(position_interpolation="nearest"), "position_interpolation"),
        (dict(num_register_tokens=-1), "num_register_tokens"),
        (dict(rotary_embedding="eva02", rotary_reference_grid=0), "rotary_reference_grid"),
    ],
)
def test_impossible_config_names_the_field(fields, field_name):
    with pytest.raises(ValueError, match=field_name):
        tiny(**fields)


@pytest.mark.parametrize("position_embedding", ["learned", "sincos"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("patch_embedding", ["patch", "conv"])
def test_every_variant_runs_and_sdpa_matches_eager(position_embedding, pooling, patch_embedding):
    torch.manual_seed(0)
    config = tiny(position_embedding=position_embedding, pooling=pooling, patch_embedding=patch_embedding)
    model = ViTForImageClassification(config).eval()
    pixels = torch.randn(4, 3, 32, 32)
    sdpa = model(pixels).logits
    model.config._attn_implementation = "eager"
    eager = model(pixels, output_attentions=True)
    assert sdpa.shape == (4, 3)
    torch.testing.assert_close(sdpa, eager.logits, atol=1e-5, rtol=1e-5)
    # One attention map per layer, CLS + 16 patches, rows are probability distributions.
    assert len(eager.attentions) == 2
    assert eager.attentions[0].shape == (4, 2, 17, 17)
    torch.testing.assert_close(eager.attentions[0].sum(-1), torch.ones(4, 2, 17))


def kernels_run(monkeypatch, model, pixels: torch.Tensor, *, bf16: bool, **kwargs) -> dict[str, int]:
    """How many times each attention kernel ran in one training forward: "sdpa" (torch's SDPA), "vit_cpu_fast"'s
    bmm + softmax with its own backward, "eager" (the plain kernel)."""
    calls = {"sdpa": 0, "vit_cpu_fast": 0, "eager": 0}

    def spy(name, function):
        def counted(*args, **kw):
            calls[name] += 1
            return function(*args, **kw)
        return counted

    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                      spy("sdpa", torch.nn.functional.scaled_dot_product_attention))
        patch.setattr(modeling.EagerAttention, "apply", spy("vit_cpu_fast", modeling.EagerAttention.apply))
        patch.setattr(modeling, "eager_attention_forward", spy("eager", modeling.eager_attention_forward))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model.train()(pixels, **kwargs)
    return calls


def test_attention_implementation_picks_the_kernel_that_runs(monkeypatch, tmp_path):
    """`attn_implementation` and `set_attn_implementation` choose the kernel every block runs: "sdpa" is SDPA and
    "eager" the plain kernel in every dtype; asked for nothing, the model takes "vit_cpu_fast" (bf16 on the CPU:
    bmm + softmax with its own backward; float32: SDPA)."""
    torch.manual_seed(0)
    model = ViTModel(tiny())  # the backbone: every block runs full attention
    pixels, layers = torch.randn(2, 3, 32, 32), TINY["num_hidden_layers"]
    assert model.config._attn_implementation == "vit_cpu_fast"
    assert kernels_run(monkeypatch, model, pixels, bf16=True) == {"sdpa": 0, "vit_cpu_fast": layers, "eager": 0}
    assert kernels_run(monkeypatch, model, pixels, bf16=False) == {"sdpa": layers, "vit_cpu_fast": 0, "eager": 0}
    model.set_attn_implementation("sdpa")
    assert kernels_run(monkeypatch, model, pixels, bf16=True) == {"sdpa": layers, "vit_cpu_fast": 0, "eager": 0}
    model.set_attn_implementation("eager")
    assert kernels_run(monkeypatch, model, pixels, bf16=True) == {"sdpa": 0, "vit_cpu_fast": 0, "eager": layers}
    model.set_attn_implementation("vit_cpu_fast")
    # Attention maps need the probabilities: the plain kernel runs for that call whatever the choice.
    assert kernels_run(monkeypatch, model, pixels, bf16=True, output_attentions=True) == {
        "sdpa": 0, "vit_cpu_fast": 0, "eager": layers}
    with pytest.raises(ValueError, match="flash_attention_9"):
        model.set_attn_implementation("flash_attention_9")

    # Loading: the name asked for, else the default (the choice is not saved in config.json).
    model.save_pretrained(tmp_path)
    assert "attn_implementation" not in json.loads((tmp_path / "config.json").read_text())
    assert ViTModel.from_pretrained(tmp_path).config._attn_implementation == "vit_cpu_fast"
    loaded = AutoModel.from_pretrained(tmp_path, attn_implementation="sdpa")
    assert kernels_run(monkeypatch, loaded, pixels, bf16=True) == {"sdpa": layers, "vit_cpu_fast": 0, "eager": 0}


def test_conv_stem_depth_adds_resolution_keeping_convolutions():
    """conv_stem_depth=3: per stage one stride-2 and two stride-1 3x3 convolutions; the tokens are the same."""
    from vit_finetune.modeling_vit import ConvStem

    shallow = ConvStem(tiny(patch_embedding="conv", conv_stem_channels=8))
    deep = ConvStem(tiny(patch_embedding="conv", conv_stem_channels=8, conv_stem_depth=3))
    strides = [m.stride[0] for m in deep.layers if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert strides == [2, 1, 1] * 3  # patch_size 8: three stages
    pixels = torch.randn(2, 3, 32, 32)
    assert deep(pixels).shape == shallow(pixels).shape == (2, 32, 4, 4)
    # Depth 1 keeps the layer names of models saved before conv_stem_depth existed.
    assert [n for n, _ in shallow.named_parameters()][:3] == ["layers.0.weight", "layers.1.weight", "layers.1.bias"]


def test_pooling_changes_what_the_head_sees():
    torch.manual_seed(0)
    cls_model = ViTModel(tiny(pooling="cls")).eval()
    mean_model = ViTModel(tiny(pooling="mean")).eval()
    mean_model.load_state_dict(cls_model.state_dict())
    pixels = torch.randn(2, 3, 32, 32)
    out_cls, out_mean = cls_model(pixels), mean_model(pixels)
    torch.testing.assert_close(out_cls.last_hidden_state, out_mean.last_hidden_state)
    torch.testing.assert_close(out_cls.pooler_output, out_cls.last_hidden_state[:, 0])
    torch.testing.assert_close(out_mean.pooler_output, out_mean.last_hidden_state[:, 1:].mean(1))


def test_hidden_states_and_tuple_output():
    model = ViTForImageClassification(tiny()).eval()
    pixels = torch.randn(2, 3, 32, 32)
    out = model(pixels, output_hidden_states=True)
    assert len(out.hidden_states) == 3  # embeddings + one per layer
    as_tuple = model(pixels, labels=torch.tensor([0, 1]), return_dict=False)
    assert as_tuple[0].dim() == 0 and as_tuple[1].shape == (2, 3)


def test_sincos_positions_are_fixed_and_distinct():
    table = sincos_position_table(4, 4, 32)
    assert table.shape == (17, 32)
    assert torch.all(table[0] == 0)  # the CLS token gets no position
    distances = torch.cdist(table[1:], table[1:]) + torch.eye(16)
    assert distances.min() > 0.1  # every patch position is distinguishable
    model = ViTForImageClassification(tiny(position_embedding="sincos"))
    assert not any("position" in name for name, _ in model.named_parameters())


def test_other_resolution_needs_interpolation_and_then_works():
    model = ViTForImageClassification(tiny()).eval()
    bigger = torch.randn(1, 3, 64, 48)
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        model(bigger)
    assert model(bigger, interpolate_pos_encoding=True).logits.shape == (1, 3)
    # At the native resolution interpolation is the identity.
    pixels = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(model(pixels).logits, model(pixels, interpolate_pos_encoding=True).logits)
    sincos = ViTForImageClassification(tiny(position_embedding="sincos")).eval()
    assert sincos(bigger, interpolate_pos_encoding=True).logits.shape == (1, 3)


def test_wrong_channel_count_is_a_clear_error():
    model = ViTForImageClassification(tiny(num_channels=3))
    with pytest.raises(ValueError, match="num_channels=3"):
        model(torch.randn(1, 1, 32, 32))


def test_grayscale_model_folds_rgb_to_luma():
    # transformers' pipeline always sends RGB; a 1-channel model must see the luma image.
    model = ViTForImageClassification(tiny(num_channels=1)).eval()
    gray = torch.rand(2, 1, 32, 32)
    rgb = gray.expand(-1, 3, -1, -1).clone()
    torch.testing.assert_close(model(rgb).logits, model(gray).logits)
    colour = torch.rand(1, 3, 32, 32)
    luma = (colour * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    torch.testing.assert_close(model(colour).logits, model(luma).logits)


def test_losses_follow_problem_type():
    torch.manual_seed(0)
    pixels = torch.randn(4, 3, 32, 32)
    model = ViTForImageClassification(tiny()).eval()
    labels = torch.tensor([0, 2, 1, 2])
    hard = model(pixels, labels=labels)
    assert model.config.problem_type == "single_label_classification"
    expected = torch.nn.functional.cross_entropy(hard.logits, labels)
    torch.testing.assert_close(hard.loss, expected)
    # Soft targets (mixup/cutmix) equal to one-hot give the same loss as the class ids.
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    torch.testing.assert_close(model(pixels, labels=one_hot).loss, expected)

    multi = ViTForImageClassification(tiny(problem_type="multi_label_classification")).eval()
    targets = torch.tensor([[1.0, 0.0, 1.0]] * 4)
    out = multi(pixels, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets))

    regression = ViTForImageClassification(tiny(num_labels=1)).eval()
    values = torch.randn(4)
    out = regression(pixels, labels=values)
    assert regression.config.problem_type == "regression"
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), values))


@pytest.mark.parametrize("hidden_act", ["gelu", "relu", "gelu_new"])
@pytest.mark.parametrize("autocast", [False, True])
def test_inference_without_autograd_gives_the_same_outputs(hidden_act, autocast):
    """Without autograd the blocks write activations and residual sums over used-once buffers: the logits and
    every returned hidden state must be exactly those of a forward that records gradients."""
    torch.manual_seed(0)
    model = ViTForImageClassification(tiny(hidden_act=hidden_act)).eval()
    # One attention kernel for both (by default, recording gradients would pick another one on the CPU).
    model.config._attn_implementation = "eager"
    pixels = torch.randn(3, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        recorded = model(pixels, output_hidden_states=True)
        with torch.inference_mode():
            fast = model(pixels, output_hidden_states=True)
        recorded_logits = model(pixels).logits  # CLS-only last block (see the next test)
        with torch.no_grad():
            logits = model(pixels).logits
    assert recorded.logits.requires_grad and not fast.logits.requires_grad
    assert torch.equal(fast.logits, recorded.logits.detach()) and torch.equal(logits, recorded_logits.detach())
    for got, want in zip(fast.hidden_states, recorded.hidden_states, strict=True):
        assert torch.equal(got, want.detach())


@pytest.mark.parametrize("autocast", [False, True])
def test_cls_pooled_classifier_computes_only_the_cls_token_in_the_last_block(autocast):
    """Only the CLS token's final state reaches a CLS-pooled head, so the last block runs its query, attention
    output and MLP for that token alone. Logits and gradients must be those of the full computation."""
    torch.manual_seed(0)
    config = tiny(num_hidden_layers=3)
    pixels, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    full, fast = ViTForImageClassification(config), ViTForImageClassification(config)
    fast.load_state_dict(full.state_dict())
    seen = {}
    for name, model in (("full", full), ("fast", fast)):
        model.vit.layers[-1].mlp.fc1.register_forward_pre_hook(lambda m, i, name=name: seen.update({name: i[0].shape}))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        # Asking for the hidden states takes the full path: every token's final state is returned.
        full_out = full(pixels, labels=labels, output_hidden_states=True)
        fast_out = fast(pixels, labels=labels)
    full_out.loss.backward()
    fast_out.loss.backward()
    assert seen == {"full": (4, 17, 32), "fast": (4, 1, 32)}
    tolerance = dict(atol=2e-2, rtol=2e-2) if autocast else dict(atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast_out.logits, full_out.logits, **tolerance)
    for (name, got), want in zip(fast.named_parameters(), full.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad, **tolerance, msg=name)

    # The backbone alone keeps every token; mean pooling needs them all.
    assert fast.vit(pixels).last_hidden_state.shape == (4, 17, 32)
    mean_model = ViTForImageClassification(tiny(pooling="mean"))
    mean_model.vit.layers[-1].mlp.fc1.register_forward_pre_hook(lambda m, i: seen.update(mean=i[0].shape))
    mean_model(pixels)
    assert seen["mean"] == (4, 17, 32)


# The options of each 2024-2026 family (as its importer sets them), on the tiny shape.
FAMILIES = {
    "dinov2_registers": dict(num_register_tokens=4, layerscale_init=1e-5, pooling="cls_mean",
                             position_interpolation="bicubic_antialias"),
    "dinov3": dict(num_register_tokens=4, position_embedding="none", rotary_embedding="dinov3", rotary_theta=100.0,
                   key_bias=False, layerscale_init=1e-5, mlp_type="glu", hidden_act="silu"),
    "siglip": dict(class_token=False, class_position_embedding=False, pooling="map", hidden_act="gelu_pytorch_tanh"),
    "clip": dict(norm_pre=True, fc_norm=True, hidden_act="quick_gelu"),
    "eva02": dict(rotary_embedding="eva02", rotary_reference_grid=4, key_bias=False, mlp_type="glu", mlp_norm=True,
                  hidden_act="silu"),
    "qk_norm": dict(qk_norm=True, class_position_embedding=False),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("autocast", [False, True])
def test_family_options_cls_only_path_and_kernels_agree(family, autocast):
    """For every family's options: the CLS-only last block (registers and rotary keys included) gives the logits
    and gradients of the full computation, and the three attention kernels agree."""
    torch.manual_seed(0)
    options = FAMILIES[family]
    pooling = options.get("pooling", "cls")
    config = tiny(num_hidden_layers=3, **options)
    pixels, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    full, fast = ViTForImageClassification(config), ViTForImageClassification(config)
    fast.load_state_dict(full.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        full_out = full(pixels, labels=labels, output_hidden_states=True)
        fast_out = fast(pixels, labels=labels)
    full_out.loss.backward()
    fast_out.loss.backward()
    tolerance = dict(atol=2e-2, rtol=2e-2) if autocast else dict(atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast_out.logits, full_out.logits, **tolerance)
    for (name, got), want in zip(fast.named_parameters(), full.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad, **tolerance, msg=name)
    tokens = 16 + config.num_prefix_tokens
    assert full_out.hidden_states[-1].shape == (4, tokens, 32)
    assert full.vit(pixels).pooler_output.shape == (4, 64 if pooling == "cls_mean" else 32)
    if not autocast:
        full.eval()
        with torch.no_grad():
            outputs = {}
            for implementation in ("vit_cpu_fast", "sdpa", "eager"):
                full.set_attn_implementation(implementation)
                outputs[implementation] = full(pixels).logits
        torch.testing.assert_close(outputs["sdpa"], outputs["eager"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(outputs["vit_cpu_fast"], outputs["eager"], atol=1e-5, rtol=1e-4)


def test_a_key_without_bias_stays_without_bias():
    """DINOv3 and EVA-02 have no key bias: training, or a checkpoint with a nonzero one, cannot give it one."""
    torch.manual_seed(0)
    model = ViTForImageClassification(tiny(**FAMILIES["dinov3"]))
    attention = model.vit.layers[0].attention
    width = 32
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        attention.qkv.bias.normal_()  # as a foreign checkpoint might hold
        before = model(pixels).logits
        attention.qkv.bias[width:2 * width] += 5.0  # only the key slice changes: with rotary keys it would count
        after = model(pixels).logits
    torch.testing.assert_close(before, after)
    model(pixels, labels=torch.tensor([0, 1])).loss.backward()
    assert attention.qkv.bias.grad[width:2 * width].abs().max() == 0
    assert attention.qkv.bias.grad[:width].abs().max() > 0


def test_rotary_models_change_resolution_without_interpolation():
    """Rotary positions have no table: another resolution just runs (DINOv3 is trained at several); a model with a
    learned table asks for interpolate_pos_encoding."""
    torch.manual_seed(0)
    model = ViTForImageClassification(tiny(**FAMILIES["dinov3"])).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 48, 32)).logits.shape == (2, 3)
        out = model.vit(torch.randn(1, 3, 48, 48)).last_hidden_state
    assert out.shape == (1, 4 + 1 + 36, 32)
    # The angles depend on the grid (patch centres are normalised per axis): not a cropped larger grid.
    small, large = model.vit.rotary((4, 4), torch.device("cpu")), model.vit.rotary((6, 6), torch.device("cpu"))
    assert not torch.allclose(small[0], large[0][:16])


def test_family_parameters_know_their_groups():
    """Register tokens and the pooling query take no weight decay; norm_pre goes with the embeddings and the
    attention pooling with the head for layer decay."""
    model = ViTForImageClassification(tiny(num_register_tokens=2, pooling="map", norm_pre=True))
    no_decay = model.no_weight_decay()
    assert {"vit.embeddings.register_tokens", "vit.pooler.latent"} <= no_decay
    assert "vit.pooler.q.weight" not in no_decay
    last = model.num_layer_ids() - 1
    assert model.layer_id("vit.norm_pre.weight") == 0
    assert model.layer_id("vit.pooler.kv.weight") == last == model.layer_id("classifier.weight")


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    pixels, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    model = ViTForImageClassification(tiny())
    model(pixels, labels=labels).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    # transformers 5.24 renamed gradient_checkpointing_enable; accept both.
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    model.train()
    model(pixels, labels=labels).loss.backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, plain[name], msg=name)


def test_drop_path_and_dropout_only_in_training():
    torch.manual_seed(0)
    model = ViTForImageClassification(tiny(drop_path_rate=0.5, hidden_dropout_prob=0.2))
    pixels = torch.randn(8, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(pixels).logits, model(pixels).logits)
    model.train()
    assert not torch.allclose(model(pixels).logits, model(pixels).logits)


def test_init_is_sane():
    model = ViTForImageClassification(ViTConfig())  # ViT-B/16
    assert 85e6 < sum(p.numel() for p in model.parameters()) < 88e6
    weight = model.vit.layers[0].attention.qkv.weight
    assert abs(weight.std().item() - 0.02) < 0.003
    assert torch.all(model.vit.layernorm.weight == 1)


def test_save_and_load_round_trip_exactly(tmp_path):
    torch.manual_seed(0)
    config = tiny(patch_embedding="conv", id2label={0: "cat", 1: "dog", 2: "bird"})
    model = ViTForImageClassification(config).eval()
    # Give BatchNorm non-default running statistics: they must be saved too.
    model.train()
    model(torch.randn(4, 3, 32, 32))
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    loaded = ViTForImageClassification.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    pixels = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(pixels).logits, loaded(pixels).logits)
    assert loaded.config.id2label[2] == "bird"
    auto = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert isinstance(auto, ViTForImageClassification)
    assert isinstance(AutoModel.from_pretrained(tmp_path), ViTModel)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), ViTConfig)


def test_remote_code_files_import_only_torch_and_transformers():
    allowed = {"torch", "transformers", "math", "__future__"}
    package = Path(vit_finetune.__file__).parent
    for name in ("configuration_vit.py", "modeling_vit.py"):
        tree = ast.parse((package / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: only the sibling configuration file
                    assert node.module == "configuration_vit", (name, node.module)
                    continue
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, (name, roots)


def test_saved_folder_loads_where_vit_finetune_cannot_be_imported(tmp_path):
    torch.manual_seed(0)
    model = ViTForImageClassification(tiny(position_embedding="sincos", pooling="mean")).eval()
    # And a model with the recent families' options: they must travel in the remote code too.
    modern = ViTForImageClassification(tiny(**FAMILIES["dinov3"], qk_norm=True, norm_pre=True)).eval()
    modern.save_pretrained(tmp_path / "modern")
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForImageClassification"] == "modeling_vit.ViTForImageClassification"
    pixels = torch.randn(2, 3, 32, 32)
    torch.save(pixels, tmp_path / "pixels.pt")
    expected = model(pixels).logits

    script = textwrap.dedent(f"""
        import sys
        sys.modules["vit_finetune"] = None  # any import of our package now fails
        try:
            import vit_finetune
        except ImportError:
            pass
        else:
            raise SystemExit("vit_finetune was importable")
        import torch
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        pixels = torch.load({str(tmp_path / "pixels.pt")!r}, weights_only=True)
        with torch.no_grad():
            torch.save(model(pixels).logits, {str(tmp_path / "logits.pt")!r})
        modern = AutoModelForImageClassification.from_pretrained({str(tmp_path / "modern")!r},
                                                                 trust_remote_code=True).eval()
        with torch.no_grad():
            torch.save(modern(pixels).logits, {str(tmp_path / "modern_logits.pt")!r})
    """)
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    logits = torch.load(tmp_path / "logits.pt", weights_only=True)
    torch.testing.assert_close(logits, expected.detach())
    with torch.no_grad():
        modern_expected = modern(pixels).logits
    torch.testing.assert_close(torch.load(tmp_path / "modern_logits.pt", weights_only=True), modern_expected)


def test_import_stays_light():
    # The package import must not drag in the data / demo stacks (transformers itself imports accelerate).
    code = ("import sys, vit_finetune; heavy = [m for m in ('datasets', 'gradio', 'matplotlib', "
            "'timm', 'evaluate', 'kornia', 'sklearn') if m in sys.modules]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_cli_lists_its_commands():
    result = subprocess.run([sys.executable, "-m", "vit_finetune.cli", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    for command in ("train", "eval", "predict", "convert", "push", "push-space", "demo"):
        assert f"  {command} " in result.stdout
    bad = subprocess.run([sys.executable, "-m", "vit_finetune.cli", "frobnicate"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "unknown command 'frobnicate'" in bad.stderr
