"""transformers' own model contract: its common model and config tests (ModelTesterMixin, ConfigTester), run
against our classes for the default options and for a variant with every option on.

The tests come from the sdist of the installed transformers version, fetched at test time (see
tests/transformers_standins); without it (offline, no PyPI) this module is skipped with the reason.
"""

from __future__ import annotations

import unittest

import pytest
import torch

import transformers_standins  # tests/transformers_standins
from vit_finetune import ViTConfig, ViTForImageClassification, ViTModel

try:
    common, config_common = transformers_standins.load()
except transformers_standins.Unavailable as error:
    pytest.skip(str(error), allow_module_level=True)

ModelTesterMixin, floats_tensor, ids_tensor = common.ModelTesterMixin, common.floats_tensor, common.ids_tensor
ConfigTester = config_common.ConfigTester

# Every option of ViTConfig away from its default: the conv stem (with BatchNorm), the fixed sine-cosine position
# table, mean pooling, LayerScale, stochastic depth and dropout.
ALL_OPTIONS = dict(patch_embedding="conv", conv_stem_channels=8, conv_stem_depth=2, position_embedding="sincos",
                   pooling="mean", layerscale_init=0.1, drop_path_rate=0.1, hidden_dropout_prob=0.1,
                   attention_probs_dropout_prob=0.1, qkv_bias=False)


class ViTModelTester:
    """Builds the small configs and inputs the common tests ask for (transformers' ViTModelTester, for our config)."""

    def __init__(self, parent, batch_size=4, image_size=16, patch_size=4, num_channels=3, hidden_size=32,
                 num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, num_labels=3, is_training=True,
                 use_labels=True, **options):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.num_labels = num_labels
        self.is_training = is_training
        self.use_labels = use_labels
        self.options = options
        # The patches, the CLS token and any registers.
        self.seq_length = (image_size // patch_size) ** 2 + ViTConfig(**options).num_prefix_tokens
        # Exporting with a symbolic image size needs the learned table resized to the grid (the sincos one is
        # computed for any grid).
        if options.get("position_embedding", "learned") == "learned":  # rotary positions need nothing
            self.export_forward_kwargs = {"interpolate_pos_encoding": True}

    def get_config(self) -> ViTConfig:
        return ViTConfig(
            image_size=self.image_size, patch_size=self.patch_size, num_channels=self.num_channels,
            hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
            num_labels=self.num_labels, **self.options,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        labels = ids_tensor([self.batch_size], self.num_labels) if self.use_labels else None
        return self.get_config(), pixel_values, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}

    def create_and_check_model(self, config, pixel_values, labels):
        model = ViTModel(config).eval()
        with torch.no_grad():
            result = model(pixel_values)
        self.parent.assertEqual(result.last_hidden_state.shape, (self.batch_size, self.seq_length, self.hidden_size))
        self.parent.assertEqual(result.pooler_output.shape, (self.batch_size, self.hidden_size))

    def create_and_check_for_image_classification(self, config, pixel_values, labels):
        model = ViTForImageClassification(config).eval()
        with torch.no_grad():
            result = model(pixel_values, labels=labels)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.num_labels))
        self.parent.assertTrue(torch.isfinite(result.loss))


class ViTModelTest(ModelTesterMixin, unittest.TestCase):
    """The common tests with ViTConfig's defaults (plain patches, learned positions, CLS pooling)."""

    all_model_classes = (ViTModel, ViTForImageClassification)
    options: dict = {}
    test_resize_embeddings = False  # there is no token vocabulary to resize
    # transformers runs this check only for models it dates from 2023 on (by a copyright line ours lacks).
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = ViTModelTester(self, **self.options)
        self.config_tester = ConfigTester(self, config_class=ViTConfig, has_text_modality=False, hidden_size=48,
                                          **self.options)

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())

    def test_for_image_classification(self):
        self.model_tester.create_and_check_for_image_classification(*self.model_tester.prepare_config_and_inputs())

    @unittest.skip(reason="a vision model: no inputs_embeds")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="a vision model: no input_ids to compare inputs_embeds with")
    def test_inputs_embeds_matches_input_ids(self):
        pass

    @unittest.skip(reason="a vision model: the input embedding is the patch projection, not a settable nn.Embedding")
    def test_model_get_set_embeddings(self):
        pass

    # Tested instead by test_model.py::test_attention_implementation_picks_the_kernel_that_runs.
    @unittest.skip(reason="asked for nothing, our models take 'vit_cpu_fast' (SDPA where it is faster), not 'sdpa'")
    def test_sdpa_can_dispatch_non_composite_models(self):
        pass


class ViTAllOptionsModelTest(ViTModelTest):
    """The common tests with every option of ViTConfig on."""

    options = ALL_OPTIONS


# The options of the 2024-2026 backbones at once: DINOv3's registers, rotary positions and key without bias,
# a SwiGLU MLP (DINOv2-giant, EVA-02), qk_norm, CLIP's norm before the blocks and SigLIP's attention pooling.
MODERN_OPTIONS = dict(num_register_tokens=2, position_embedding="none", rotary_embedding="dinov3", rotary_theta=100.0,
                      key_bias=False, layerscale_init=1e-5, mlp_type="glu", hidden_act="silu", qk_norm=True,
                      norm_pre=True, pooling="map")


class ViTModernOptionsModelTest(ViTModelTest):
    """The common tests for a variant with registers, rotary positions, a gated MLP and attention pooling."""

    options = MODERN_OPTIONS
