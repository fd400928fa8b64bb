"""Publishing to the Hugging Face Hub.

    api.py          the token, creating repos, one-line explanations of Hub failures
    upload_plan.py  what a push uploads from a model folder and what stays local
    redact.py       local paths rewritten out of the uploaded records
    push.py         `vit-finetune push`
    space.py        `vit-finetune push-space` (the Gradio demo as a Space)
    model_card.py   the model card (README.md) of every model folder
"""

from .api import PushError
from .model_card import GENERATED_MARKER, build_model_card, write_model_card
from .push import push_main, push_to_hub
from .space import push_space, push_space_main, space_files
from .upload_plan import LeftOut, UploadFile, check_model_folder, plan_upload

__all__ = ["PushError", "UploadFile", "LeftOut", "check_model_folder", "plan_upload", "push_to_hub", "push_main",
           "space_files", "push_space", "push_space_main", "GENERATED_MARKER", "build_model_card",
           "write_model_card"]
