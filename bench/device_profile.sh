#!/usr/bin/env bash
# The device run of issue 23 (a realistic robust checkpoint through the whole protocol), from the repository
# root on the GPU machine, after bench/device_wheels.sh prepared .whl and .bench-data here (carry both):
#   bash bench/device_profile.sh .bench-data/cifar10-real-subset.npz [bench_profile.py args]
# Trains a PGD ResNet18 on the real training subset (--train-s, default 90 s), evaluates linf-8-255-v2 on the
# first --n training images (default 400) under strict, TF32 + autotuning and TF32 + channels_last + CUDA
# graphs, measures the bare rates, projects N = 10,000, checks agreement, then profiles per stage if time is
# left. About 8 minutes on one H100 (DEVICE_WINDOW_S, default 470, bounds it). Everything goes to $OUT: the
# log, bench_profile.json, bench_profile_tables.txt, agreement.npz, model-part-*.npz (the model, float16, for a
# later session: --load-model <folder holding them>). CPU check of the same path: --cpu-smoke.
set -uo pipefail
npz=${1:?usage: bash bench/device_profile.sh <npz> [bench_profile.py args]}
shift
out=${OUT:-device-out}
mkdir -p "$out"
export PYTHONPATH="$PWD:$PWD/.whl/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export APB_CACHE_DIR=/tmp/apb-cache
py=${PYTHON:-python3}
started=$(date +%s)
{
  date -u
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.sm,driver_version --format=csv
  $py -c 'import torch, sys; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'
  budget=$(( ${DEVICE_WINDOW_S:-470} - ($(date +%s) - started) ))
  timeout $(( budget + 60 )) $py bench/bench_profile.py --data "$npz" --out "$out" --budget-s "$budget" \
    --train-s 90 --n 400 --configs strict,tf32,tf32+cl+graphs --profile-n 64 "$@"
  rc=$?
  echo "bench_profile exit $rc after $(( $(date +%s) - started )) s"
  exit $rc
} 2>&1 | tee "$out/device_profile.log"
exit "${PIPESTATUS[0]}"
