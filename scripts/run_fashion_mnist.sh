#!/usr/bin/env bash
# Fashion-MNIST end to end on a CPU: get the data, train a small ViT from scratch, evaluate it on the official
# 10,000-image test split, print the test accuracy and where the model folder is.
#
#   bash scripts/run_fashion_mnist.sh                      # configs/fashion_mnist.yaml as is
#   bash scripts/run_fashion_mnist.sh --max_train_minutes 5 # any training flag is passed on
#
# Assumes an activated environment with vit-finetune installed. Running it again after an interruption resumes
# from the newest checkpoint (--resume_from_checkpoint latest). Environment: DATA_DIR, OUTPUT_DIR, CONFIG.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=${DATA_DIR:-data/fashion_mnist}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/fashion_mnist}
CONFIG=${CONFIG:-configs/fashion_mnist.yaml}
SOURCE=/usr/share/datasets/fashion-mnist

if [ ! -f "$DATA_DIR/.complete.json" ] && [ ! -f "$SOURCE/train-images-idx3-ubyte.gz" ]; then
    echo "== installing Debian's dataset-fashion-mnist (the four IDX files, 30 MB)"
    if [ "$(id -u)" -eq 0 ]; then
        apt-get install -y dataset-fashion-mnist >/dev/null || { apt-get update >/dev/null && apt-get install -y dataset-fashion-mnist >/dev/null; }
    elif command -v sudo >/dev/null; then
        sudo apt-get install -y dataset-fashion-mnist >/dev/null
    else
        echo "error: $SOURCE is missing; install it as root: apt-get install -y dataset-fashion-mnist" >&2
        echo "       (or put the four Fashion-MNIST .gz files there, or run scripts/prepare_fashion_mnist.py --download)" >&2
        exit 1
    fi
fi

echo "== writing Fashion-MNIST as PNG folders in $DATA_DIR"
python scripts/prepare_fashion_mnist.py --output_dir "$DATA_DIR"

echo "== training ($CONFIG) into $OUTPUT_DIR"
python -m vit_finetune.cli train --config "$CONFIG" \
    --train_dir "$DATA_DIR/train" --test_dir "$DATA_DIR/test" --output_dir "$OUTPUT_DIR" \
    --resume_from_checkpoint latest "$@"

echo "== evaluating the model folder on the test split"
python -m vit_finetune.cli eval "$OUTPUT_DIR" --image_dir "$DATA_DIR/test" --output_dir "$OUTPUT_DIR/eval_test"

python - "$OUTPUT_DIR" <<'PY'
import json, sys
from pathlib import Path
folder = Path(sys.argv[1]).resolve()
test = json.loads((folder / "eval_test" / "eval_results.json").read_text())["images"]
minutes = json.loads((folder / "metrics.json").read_text())["train_runtime_s"] / 60
print(f"\nFashion-MNIST test accuracy: {100 * test['accuracy']:.2f}% on {test['samples']} images "
      f"(trained {minutes:.1f} min)\nmodel folder: {folder}")
PY
