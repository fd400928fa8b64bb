"""Configuration of the vit-finetune Vision Transformer.

This file is copied next to every saved model (remote code), so it imports nothing but transformers.
"""

from __future__ import annotations

from transformers import PretrainedConfig

POSITION_EMBEDDINGS = ("learned", "sincos")
POOLINGS = ("cls", "mean")
PATCH_EMBEDDINGS = ("patch", "conv")
HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "quick_gelu")


class ViTConfig(PretrainedConfig):
    """Shape and options of a Vision Transformer. The defaults are ViT-Base/16 at 224 px.

    Args:
        image_size: side of the (square) input image in pixels, the resolution the model is trained at.
        patch_size: side of the square patches the image is cut into; one token per patch.
        num_channels: 3 for RGB, 1 for grayscale images.
        hidden_size: width of every token (the embedding dimension).
        num_hidden_layers: number of transformer blocks.
        num_attention_heads: heads per attention layer; must divide `hidden_size`.
        intermediate_size: hidden width of each block's MLP (usually 4 x hidden_size).
        hidden_act: activation of the MLP, one of `HIDDEN_ACTS`.
        hidden_dropout_prob: dropout after the embeddings, the attention projection and the MLP.
        attention_probs_dropout_prob: dropout on the attention probabilities.
        drop_path_rate: stochastic depth; block `i` of `n` drops its residual branch with probability
            `drop_path_rate * i / (n - 1)` during training.
        layer_norm_eps: epsilon of every LayerNorm.
        qkv_bias: whether the query, key and value projections have a bias.
        initializer_range: standard deviation of the truncated-normal initialisation.
        position_embedding: "learned" (a trained table, as in the original ViT) or "sincos" (the fixed 2D
            sine-cosine table of MAE, which needs no training and suits small datasets).
        pooling: "cls" classifies the CLS token's output; "mean" averages the patch tokens.
        patch_embedding: "patch" is one strided convolution (the original ViT); "conv" is a small
            convolutional stem (3x3 convolutions with BatchNorm and ReLU, halving the resolution until the
            stride reaches `patch_size`) that helps ViTs learn from small datasets.
        conv_stem_channels: width of the first stem convolution (doubled at each downsampling, capped at
            `hidden_size`); only used with `patch_embedding="conv"`.
        conv_stem_depth: 3x3 convolutions per resolution of the stem: the first of each halves the
            resolution, the others keep it (more convolutional capacity at a small cost, for small images);
            only used with `patch_embedding="conv"`.
        layerscale_init: if set, each residual branch is scaled by a learned per-channel factor initialised
            to this value (CaiT/DeiT-III LayerScale); `None` disables it.
    """

    model_type = "vit_finetune"
    # Fields that may change when starting from pretrained weights; the others define the weights' shapes.
    pretrained_overridable = ("image_size", "hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate",
                              "pooling")

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        num_channels: int = 3,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_norm_eps: float = 1e-12,
        qkv_bias: bool = True,
        initializer_range: float = 0.02,
        position_embedding: str = "learned",
        pooling: str = "cls",
        patch_embedding: str = "patch",
        conv_stem_channels: int = 32,
        conv_stem_depth: int = 1,
        layerscale_init: float | None = None,
        **kwargs,
    ):
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.layer_norm_eps = layer_norm_eps
        self.qkv_bias = qkv_bias
        self.initializer_range = initializer_range
        self.position_embedding = position_embedding
        self.pooling = pooling
        self.patch_embedding = patch_embedding
        self.conv_stem_channels = conv_stem_channels
        self.conv_stem_depth = conv_stem_depth
        self.layerscale_init = layerscale_init
        super().__init__(**kwargs)
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the field for any impossible combination."""
        for name in ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers",
                     "num_attention_heads", "intermediate_size", "conv_stem_channels", "conv_stem_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ViTConfig.{name} must be a positive integer, got {value!r}")
        if self.num_channels not in (1, 3):
            raise ValueError(f"ViTConfig.num_channels must be 1 (grayscale) or 3 (RGB), got {self.num_channels}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ViTConfig.image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size})"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"ViTConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        choices = {
            "position_embedding": POSITION_EMBEDDINGS,
            "pooling": POOLINGS,
            "patch_embedding": PATCH_EMBEDDINGS,
            "hidden_act": HIDDEN_ACTS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"ViTConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.patch_embedding == "conv" and self.patch_size & (self.patch_size - 1):
            raise ValueError(f"ViTConfig.patch_size must be a power of two with patch_embedding='conv', "
                             f"got {self.patch_size}")
        if self.position_embedding == "sincos" and self.hidden_size % 4:
            raise ValueError(f"ViTConfig.hidden_size ({self.hidden_size}) must be divisible by 4 for "
                             "position_embedding='sincos'")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"ViTConfig.{name} must be in [0, 1), got {value!r}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2
