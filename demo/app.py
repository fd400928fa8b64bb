"""Launch the Gradio demo from a repository checkout: `python demo/app.py MODEL [options]`.

MODEL is a model folder written by `vit-finetune train` or a Hub id; the options are those of
`vit-finetune demo` (`--share`, `--server_name`, `--server_port`, ...). The app itself lives in
`vit_finetune/demo/` (`pip install -e .` makes it importable from a checkout); `vit-finetune push-space`
uploads those files as a Space.
"""

import sys

from vit_finetune.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
