#!/usr/bin/env bash
# Checks for a machine with a CUDA GPU (CI has none): the GPU tests, the default suite with the GPU visible
# (every `device="auto"` run then trains on it with bf16 autocast), and the GPU section of the training-overhead
# benchmark. Logs go to $OUT (default out/gpu). Run from the repository root: bash scripts/gpu_checks.sh
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
{
  nvidia-smi -L
  $PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__,
'peft', peft.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/machine.txt"
echo "== GPU tests"
timeout 150 $PY -m pytest -q -p no:cacheprovider -rfE tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
echo "== default suite with the GPU visible"
timeout 240 $PY -m pytest -q -p no:cacheprovider -rfE --continue-on-collection-errors --timeout 120 -n 8 \
  2>&1 | tail -80 | tee "$OUT/suite.txt"
echo "== training overhead on the GPU"
timeout 120 $PY benchmarks/train_overhead.py --skip-cpu --gpu-steps 300 2>&1 | tee "$OUT/overhead.txt"
