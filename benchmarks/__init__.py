"""Speed measurements of vit-finetune, run as modules from the repository root (this file makes `benchmarks` a
package, so they import each other without touching sys.path):

    python -m benchmarks.models     # our ViT against transformers' and timm's: images/s, FLOP use, memory, kernels
    python -m benchmarks.pipeline   # data preparation, batched augmentation, the whole training loop (+ models)

Not installed with the package: they measure it, they are not part of it.
"""
