#!/usr/bin/env bash
# Sets up everything vit-finetune needs on a fresh Debian machine: system packages (Fashion-MNIST data,
# Chromium for the demo's browser test) and a virtual environment in .venv with the package installed.
# Safe to run again: every step is skipped or quick when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(dataset-fashion-mnist chromium)
missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
# torch first and pinned: these builds lie on this project's machines' local disk (no multi-GB download),
# and torchvision must match torch exactly.
if [ "$(uname -m)" = "aarch64" ]; then
  torch_pins=(torch==2.9.1 torchvision==0.24.1)
else
  torch_pins=(torch==2.14.1 torchvision==0.29.1)
fi
echo "setup: installing ${torch_pins[*]} and vit-finetune[dev,demo] into .venv"
.venv/bin/python -m pip install -q "${torch_pins[@]}" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q -e ".[dev,demo]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import vit_finetune, torch; print('setup: ok, torch', torch.__version__)"
