#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go (CI has no GPU; run this on a GPU machine with the package
# importable). Everything lands in $OUT (default outputs/gpu_checks):
#   cuda_tests.log  tests/test_cuda.py (bf16 autocast, SDPA vs eager, training on the GPU, DDP/NCCL under torchrun)
#                   and the training/resume tests, which then run their loops on the GPU
#   bench/          python -m benchmarks.models --device cuda (ours vs transformers' and timm's ViT)
#   sweep.tgz       scripts/recipe_sweep.py accuracy: Fashion-MNIST recipe variants, accuracy per epoch
#                   (their configs and metrics.json; weights and checkpoints left out)
# Usage, from the repository root: OUT=/tmp/gpu IDX_DIR=/usr/share/datasets/fashion-mnist bash scripts/gpu_checks.sh
set -u
OUT=${OUT:-outputs/gpu_checks}
IDX_DIR=${IDX_DIR:-/usr/share/datasets/fashion-mnist}
DATA_DIR=${DATA_DIR:-data/fashion_mnist}
SWEEP_JOBS=${SWEEP_JOBS:-5}
mkdir -p "$OUT/bench"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu_info.txt" 2>&1
$PY -c "import torch, transformers, accelerate, datasets, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'datasets', datasets.__version__, \
'timm', timm.__version__)" >> "$OUT/gpu_info.txt" 2>&1
cat "$OUT/gpu_info.txt"

# The sweep trains from the PNG folders, like any `vit-finetune train` run.
$PY scripts/prepare_fashion_mnist.py --source_dir "$IDX_DIR" --output_dir "$DATA_DIR" > "$OUT/prepare.log" 2>&1 \
    || { echo "prepare_fashion_mnist failed:"; tail -5 "$OUT/prepare.log"; }

# The sweep shares the GPU with the tests (neither is timed); the benchmark runs alone afterwards.
sweep_dir=$(mktemp -d)
timeout "${SWEEP_TIMEOUT:-330}" $PY scripts/recipe_sweep.py accuracy --variants configs/sweeps/fashion_mnist.yaml \
    --data_dir "$DATA_DIR" --out "$sweep_dir" --jobs "$SWEEP_JOBS" > "$OUT/sweep.log" 2>&1 &
sweep_pid=$!

timeout "${TESTS_TIMEOUT:-240}" $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_train.py \
    tests/test_train_resume.py > "$OUT/cuda_tests.log" 2>&1
echo "tests exit $?"; tail -15 "$OUT/cuda_tests.log"

wait $sweep_pid; echo "sweep exit $?"
$PY scripts/recipe_sweep.py report --variants configs/sweeps/fashion_mnist.yaml --out "$sweep_dir" > /dev/null 2>&1
tar -czf "$OUT/sweep.tgz" -C "$sweep_dir" --exclude checkpoints --exclude '*.safetensors' .
cat "$sweep_dir/sweep.md" 2>/dev/null; tail -5 "$OUT/sweep.log"

timeout "${BENCH_TIMEOUT:-150}" $PY -m benchmarks.models --device cuda --batch_size 256 --repeats 7 \
    --quiet_wait 0 --out "$OUT/bench" > "$OUT/bench.log" 2>&1
echo "benchmark exit $?"; cat "$OUT/bench/models.md" 2>/dev/null | head -30
