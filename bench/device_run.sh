#!/usr/bin/env bash
# The one device run of issue 14, from the repository root on the GPU machine:
#   bash bench/device_run.sh .bench-data/cifar10-real-subset.npz [bench budget in seconds, default 380] [bench args]
# The follow-up run (after a full one measured the pilot and the large runs): k = 1/2/4, VGG16, TF32 agreement:
#   bash bench/device_run.sh .bench-data/cifar10-real-subset.npz 420 --follow-up --agreement-n 1000
# (carry: .whl and .bench-data, prepared here by bench/device_wheels.sh). Installs nothing: the packages the
# device image lacks come unpacked in .whl/site. Runs `pytest -m gpu`, then bench/bench_gpu.py; every log
# goes to $OUT. About 7 minutes on an H100 (tests ~1.5 min, bench within its budget).
set -uo pipefail
npz=${1:?usage: bash bench/device_run.sh <npz> [budget_s]}
budget=${2:-380}
shift $(( $# < 2 ? $# : 2 ))
out=${OUT:-device-out}
mkdir -p "$out"
export PYTHONPATH="$PWD:$PWD/.whl/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export APB_CACHE_DIR=/tmp/apb-cache
py=python3
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu,clocks.sm,driver_version --format=csv
  $py -c 'import torch, sys; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name(0))'
  $py -c 'import evaluator, pyautoattack, optuna, ruamel.yaml; print("evaluator at", evaluator.__file__, "optuna", optuna.__version__)'
} 2>&1 | tee "$out/env.txt"
started=$(date +%s)
timeout 240 $py -m pytest -m gpu -p no:cacheprovider -q -rA --durations=5 tests/test_gpu.py 2>&1 | tee "$out/pytest_gpu.log"
tests_rc=${PIPESTATUS[0]}
echo "pytest -m gpu: exit $tests_rc after $(( $(date +%s) - started )) s" | tee -a "$out/pytest_gpu.log"
# the bench gets what is left of the window (DEVICE_WINDOW_S, default ~8 minutes), at most its budget
left=$(( ${DEVICE_WINDOW_S:-470} - ($(date +%s) - started) ))
budget=$(( left < budget ? left : budget ))
timeout $(( budget + 60 )) $py bench/bench_gpu.py --data "$npz" --out "$out" --budget-s "$budget" "$@" 2>&1 | tee "$out/bench_gpu.log"
bench_rc=${PIPESTATUS[0]}
echo "tests exit $tests_rc, bench exit $bench_rc, total $(( $(date +%s) - started )) s"
exit $(( tests_rc != 0 ? tests_rc : bench_rc ))
