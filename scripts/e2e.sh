#!/usr/bin/env bash
# Real-browser tests: install Debian chromium if it is missing, then run the e2e marker (JupyterLab 4 and
# Notebook 7 + Playwright). Usage: scripts/e2e.sh [extra pytest args for the browser tests].
# Never runs `playwright install` (its download fails offline).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q chromium
fi
python -c "import notebook" 2>/dev/null || python -m pip install -q "notebook>=7"
start=$(date +%s)
trap 'echo "e2e stage: $(( $(date +%s) - start )) s"' EXIT
python -m pytest -m e2e tests/e2e "$@"
