"""vit-finetune: fine-tune Vision Transformers on your own images with the Hugging Face stack.

Importing the package registers our model with transformers' Auto classes, so
`AutoModelForImageClassification.from_pretrained(folder)` works for folders we wrote.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_vit import ViTConfig
from .modeling_vit import ViTForImageClassification, ViTModel, ViTPreTrainedModel

__version__ = "0.1.0"

AutoConfig.register(ViTConfig.model_type, ViTConfig, exist_ok=True)
AutoModel.register(ViTConfig, ViTModel, exist_ok=True)
AutoModelForImageClassification.register(ViTConfig, ViTForImageClassification, exist_ok=True)

# Saved folders carry configuration_vit.py and modeling_vit.py plus an `auto_map`, so people without this
# package load them with trust_remote_code=True.
ViTConfig.register_for_auto_class()
ViTModel.register_for_auto_class("AutoModel")
ViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = ["ViTConfig", "ViTModel", "ViTForImageClassification", "ViTPreTrainedModel", "__version__"]
