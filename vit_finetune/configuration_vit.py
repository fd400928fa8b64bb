"""Configuration of the vit-finetune Vision Transformer.

This file is copied next to every saved model (remote code), so it imports nothing but transformers.
"""

from __future__ import annotations

from transformers import PretrainedConfig

POSITION_EMBEDDINGS = ("learned", "sincos", "none")
POSITION_INTERPOLATIONS = ("bicubic", "bicubic_antialias", "bilinear_antialias")
ROTARY_EMBEDDINGS = (None, "dinov3", "eva02")
POOLINGS = ("cls", "mean", "cls_mean", "map")
PATCH_EMBEDDINGS = ("patch", "conv")
MLP_TYPES = ("mlp", "glu")
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
        position_embedding: "learned" (a trained table, as in the original ViT), "sincos" (the fixed 2D
            sine-cosine table of MAE, which needs no training and suits small datasets) or "none" (no table:
            positions come from `rotary_embedding` alone, as in DINOv3).
        class_position_embedding: whether the position table has a row for the CLS token (the original ViT,
            DINOv2, CLIP) or covers the patch tokens only (DeiT III, timm's register models); ignored without a
            CLS token. Register tokens never get a position.
        position_interpolation: how the table is resized to another patch grid (`interpolate_pos_encoding`, or a
            new `image_size`): "bicubic" (the original ViT, DINOv2), "bicubic_antialias" (timm, DINOv2 with
            registers) or "bilinear_antialias" (SigLIP 2), each as the model was trained with.
        rotary_embedding: 2D rotary position embeddings on the patch tokens' queries and keys, None for none;
            "dinov3": patch centres in [-1, 1] per axis, angles 2*pi*c*theta^(-4k/head_dim), halves rotated;
            "eva02": patch indices (rescaled to `rotary_reference_grid` when set), angles c*theta^(-4k/head_dim),
            interleaved pairs rotated. The CLS and register tokens are not rotated. A resolution change needs no
            interpolation.
        rotary_theta: base of the rotary frequencies (DINOv3 100, EVA-02 10000).
        rotary_reference_grid: EVA-02's pretraining patch grid side: the patch indices of any other grid are
            rescaled to span it. None keeps plain indices.
        class_token: whether a learned CLS token is prepended (SigLIP has none: pooling must then be "mean" or
            "map").
        num_register_tokens: learned register tokens placed after the CLS token (DINOv2 with registers, DINOv3);
            they take part in attention but are kept out of pooling and of attention maps.
        pooling: "cls" classifies the CLS token's output; "mean" averages the patch tokens; "cls_mean"
            concatenates the CLS token with the mean of the patch tokens (transformers' DINOv2 classifier; the
            head then reads 2 x hidden_size features); "map" is a learned query attending over all tokens
            followed by an MLP (SigLIP's attention-pooling head).
        norm_pre: a LayerNorm on the tokens before the first block (CLIP).
        fc_norm: the final LayerNorm is applied to the pooled features instead of to every token (timm's
            `fc_norm`, CLIP's `post_layernorm`); only with "cls" or "mean" pooling.
        mlp_type: "mlp" (fc1, activation, fc2) or "glu", a gated MLP: hidden_act(x W_gate) * (x W_up), then fc2
            (SwiGLU with hidden_act="silu", as DINOv2-giant, DINOv3-H+ and EVA-02 use); fc1 then holds the gate
            and the up projection stacked, 2 x intermediate_size outputs.
        mlp_norm: a LayerNorm inside the MLP before fc2 (EVA-02's sub-LN, timm's `scale_mlp`).
        qk_norm: a LayerNorm over each head's queries and keys before attention (timm's `qk_norm`).
        key_bias: whether the key projection has a bias (with `qkv_bias`); DINOv3 and EVA-02 have none. The bias
            slice is then held at zero.
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
                              "pooling", "position_interpolation")

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
        class_position_embedding: bool = True,
        position_interpolation: str = "bicubic",
        rotary_embedding: str | None = None,
        rotary_theta: float = 10000.0,
        rotary_reference_grid: int | None = None,
        class_token: bool = True,
        num_register_tokens: int = 0,
        norm_pre: bool = False,
        fc_norm: bool = False,
        mlp_type: str = "mlp",
        mlp_norm: bool = False,
        qk_norm: bool = False,
        key_bias: bool = True,
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
        self.class_position_embedding = class_position_embedding
        self.position_interpolation = position_interpolation
        self.rotary_embedding = rotary_embedding
        self.rotary_theta = rotary_theta
        self.rotary_reference_grid = rotary_reference_grid
        self.class_token = class_token
        self.num_register_tokens = num_register_tokens
        self.norm_pre = norm_pre
        self.fc_norm = fc_norm
        self.mlp_type = mlp_type
        self.mlp_norm = mlp_norm
        self.qk_norm = qk_norm
        self.key_bias = key_bias
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
            "position_interpolation": POSITION_INTERPOLATIONS,
            "rotary_embedding": ROTARY_EMBEDDINGS,
            "mlp_type": MLP_TYPES,
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
        if not isinstance(self.num_register_tokens, int) or self.num_register_tokens < 0:
            raise ValueError(f"ViTConfig.num_register_tokens must be an integer >= 0, got {self.num_register_tokens!r}")
        if not self.class_token and self.pooling in ("cls", "cls_mean"):
            raise ValueError(f"ViTConfig.pooling={self.pooling!r} reads the CLS token, but class_token=False: use "
                             "'mean' or 'map'")
        if self.fc_norm and self.pooling not in ("cls", "mean"):
            raise ValueError(f"ViTConfig.fc_norm needs pooling 'cls' or 'mean', got {self.pooling!r}")
        if self.rotary_embedding is not None:
            head_dim = self.hidden_size // self.num_attention_heads
            if head_dim % 4:
                raise ValueError(f"ViTConfig.rotary_embedding needs a head size (hidden_size / num_attention_heads "
                                 f"= {head_dim}) divisible by 4")
            if not self.rotary_theta > 0:
                raise ValueError(f"ViTConfig.rotary_theta must be positive, got {self.rotary_theta!r}")
        if self.rotary_reference_grid is not None and (
            not isinstance(self.rotary_reference_grid, int) or self.rotary_reference_grid <= 0
        ):
            raise ValueError(f"ViTConfig.rotary_reference_grid must be a positive integer or None, "
                             f"got {self.rotary_reference_grid!r}")
        if self.position_embedding == "none" and self.rotary_embedding is None:
            raise ValueError("ViTConfig.position_embedding='none' needs a rotary_embedding: the model would not "
                             "know where any patch is")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"ViTConfig.{name} must be in [0, 1), got {value!r}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: the CLS token (if any), then the registers."""
        return int(self.class_token) + self.num_register_tokens

    @property
    def pooled_size(self) -> int:
        """Width of the pooled features the head reads (the CLS token and the patch mean side by side for
        "cls_mean")."""
        return 2 * self.hidden_size if self.pooling == "cls_mean" else self.hidden_size
