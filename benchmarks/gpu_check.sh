#!/usr/bin/env bash
# The GPU check of issue 3, as one short script for the lent GPU machine (see benchmarks/README.md).
# That machine has CUDA, PyTorch and pytest but no registry: the wheels travel in .whl/ (made by
# `make gpu-wheels`). It runs the opt-in gpu tests and the gpu_throughput benchmark, and copies
# the results to $OUT.
set -euo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
rm -rf /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD:$PWD/benchmarks/gpu_shim YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import dagster, mlflow, ultralytics, pandas, torch; print('dagster', dagster.__version__,
'mlflow', mlflow.__version__, 'ultralytics', ultralytics.__version__, 'pandas', pandas.__version__,
'torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
[ "${GPU_CHECK_TESTS:-1}" = 1 ] && timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider cv_assets_tests/test_gpu.py 2>&1 \
  | tail -15 | tee "$OUT/gpu_tests.txt" || true
timeout 420 python3 -m benchmarks.run gpu_throughput 2>&1 | grep -v "^\s*$" | tail -8
cp benchmarks/results.json "$OUT/results.json"
