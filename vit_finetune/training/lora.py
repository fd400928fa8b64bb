"""LoRA through the `peft` library: low-rank adapters on chosen linear layers, the new head trained in full.

    add_adapters(model, model_args) -> peft.PeftModel    (only the adapters and modules_to_save train)
    merged_copy(peft_model) -> ViTForImageClassification  (the adapters folded into the weights)
    write_adapter_folder(peft_model, folder, ...)         adapter_config.json, adapter_model.safetensors and
                                                          base_model_overrides.json (how to rebuild the base)

Why the overrides file: the adapter only holds the adapted and saved modules, so loading it needs the base model
built exactly as training built it: the same weights, resolution (position embeddings are resized on load) and
label set (the head's shape). `vit_finetune.convert.load_pretrained_vit(base, **overrides)` does that.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..arguments import ConfigError

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"  # inside a model folder, when the merged model is written too
OVERRIDES_FILE = "base_model_overrides.json"


def is_peft_model(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def add_adapters(model: torch.nn.Module, model_args: Any) -> Any:
    """`model` wrapped by peft with LoRA on `lora_target_modules`; `lora_modules_to_save` (the head) train in full.

    A target that matches no module is a ConfigError naming the flag (peft's own message lists nothing useful).
    """
    from peft import LoraConfig, get_peft_model

    names = [name for name, _ in model.named_modules()]
    for target in model_args.lora_target_modules:
        if not any(name == target or name.endswith(f".{target}") for name in names):
            raise ConfigError(f"lora_target_modules: no module of the model is named {target!r} (or ends with "
                              f".{target}); the blocks have e.g. attention.qkv, attention.proj, mlp.fc1, mlp.fc2")
    for target in model_args.lora_modules_to_save:
        if not any(name == target or name.endswith(f".{target}") for name in names):
            raise ConfigError(f"lora_modules_to_save: no module of the model is named {target!r}")
    config = LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                        target_modules=list(model_args.lora_target_modules),
                        modules_to_save=list(model_args.lora_modules_to_save), bias="none",
                        base_model_name_or_path=model_args.model_name_or_path,
                        revision=model_args.model_revision)
    peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info("LoRA r=%d alpha=%d on %s (+ %s in full): %.2f M of %.2f M parameters train (%.2f%%)",
                model_args.lora_r, model_args.lora_alpha, ", ".join(model_args.lora_target_modules),
                ", ".join(model_args.lora_modules_to_save), trainable / 1e6, total / 1e6, 100 * trainable / total)
    return peft_model


def merged_copy(peft_model: Any) -> torch.nn.Module:
    """The base model with the adapters merged into its weights, and the trained modules_to_save in place of the
    originals: a plain ViTForImageClassification. The peft model itself is left as it was."""
    return copy.deepcopy(peft_model).merge_and_unload()


def base_model_overrides(model_args: Any, config: Any) -> dict[str, Any]:
    """What `load_pretrained_vit(base, **overrides)` needs to rebuild the base this adapter was trained on."""
    overrides = dict(model_args.architecture_overrides())
    overrides["id2label"] = {str(i): label for i, label in config.id2label.items()}
    return overrides


def write_adapter_folder(peft_model: Any, folder: Path, model_args: Any, config: Any) -> None:
    """The adapter as peft writes it (safetensors), plus the overrides that rebuild its base (main process)."""
    folder.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(folder), safe_serialization=True)
    record = {"base_model": model_args.model_name_or_path, "revision": model_args.model_revision,
              "overrides": base_model_overrides(model_args, config)}
    (folder / OVERRIDES_FILE).write_text(json.dumps(record, indent=2))
