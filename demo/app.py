"""Launch the Gradio demo from a repository checkout: `python demo/app.py MODEL [options]`.

MODEL is a model folder written by `vit-finetune train` or a Hub id; the options are those of
`vit-finetune demo` (`--share`, `--server_name`, `--server_port`, ...). The app itself lives in
`vit_finetune/demo.py`, the file `vit-finetune push-space` uploads as a Space's app.py.
"""

import sys
from pathlib import Path

# Let a checkout run this without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vit_finetune.demo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
