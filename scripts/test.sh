#!/usr/bin/env bash
# Runs the test suite (~6 minutes on 2 cores; set-up, when .venv is missing, adds ~5). Sets up .venv first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup_env.sh
export HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q -m "not slow" "$@"
