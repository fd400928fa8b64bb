#!/usr/bin/env bash
# The main job, end to end on a fresh Debian machine: set up .venv, get Fashion-MNIST, train a small ViT on it
# from scratch on the CPU, evaluate on the test split, print the test accuracy and the model folder.
# Extra arguments go to the training command (e.g. --max_train_minutes 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
source .venv/bin/activate
exec bash scripts/run_fashion_mnist.sh "$@"
