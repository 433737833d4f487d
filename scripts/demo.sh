#!/usr/bin/env bash
# Open the first example notebook in JupyterLab, offline. Jupyter refuses to start as root unless asked
# (--allow-root): containers and cloud machines often run as root, so this asks for it there.
# Usage: bash scripts/demo.sh [jupyter lab options, e.g. --no-browser --port 8890]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
as_root=()
if [ "$(id -u)" -eq 0 ]; then as_root=(--allow-root); fi
exec jupyter lab ${as_root[@]+"${as_root[@]}"} "$@" examples/01_quickstart.ipynb
