#!/usr/bin/env bash
# Execute the example notebooks in a real Jupyter kernel, offline, each within its limit: 2 minutes, 3 for 05 and 07
# on an idle 2-core CPU, scaled on a slower machine by its time for a reference training step (tests/test_examples.py).
# Usage: scripts/run_examples.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
# nbclient starts the "python3" kernel: ipykernel's wheel installs that kernelspec; register it if it is missing
if ! jupyter kernelspec list 2>/dev/null | grep -qE '^\s*python3\s'; then
    python -m ipykernel install --sys-prefix
fi
start=$(date +%s)
trap 'echo "examples stage: $(( $(date +%s) - start )) s"' EXIT
python -m pytest -m slow tests/test_examples.py -v -s "$@"
