#!/usr/bin/env bash
# Prepares, on THIS machine (it has PyPI; the device has no network), what bench/device_run.sh needs, in the
# repository root: .whl/site/ (the pure-Python packages the evaluation imports that the device image lacks,
# unpacked from their wheels, pyautoattack without its 45 MB examples/ folder) and .bench-data/ (the real
# CIFAR-10 subset). Both are git-ignored through .git/info/exclude and travel by naming them in `carry`.
#   bash bench/device_wheels.sh [path/to/cifar10-real-subset.npz]
set -euo pipefail
npz=${1:-../shared/data/cifar10-real-subset.npz}
python=${PYTHON:-$(command -v python3)}
exclude=$(git rev-parse --git-path info/exclude)
for line in /.whl/ /.bench-data/; do grep -qxF "$line" "$exclude" 2>/dev/null || echo "$line" >> "$exclude"; done
rm -rf .whl && mkdir -p .whl/wheels .whl/site .bench-data
# The device image has torch, numpy, scipy, tqdm, PyYAML, packaging, pytest (KINDS.md); these four are missing.
# All are py3-none-any wheels. optuna's sqlalchemy/alembic are only imported for database storages (unused).
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl/wheels pyautoattack==0.2.0 optuna==5.0.0 colorlog==6.12.0 ruamel.yaml==0.19.1
for wheel in .whl/wheels/*.whl; do "$python" -m zipfile -e "$wheel" .whl/site; done
rm -rf .whl/wheels .whl/site/pyautoattack/examples
cp "$npz" .bench-data/cifar10-real-subset.npz
du -sh .whl .bench-data
echo "ready: run bash bench/device_run.sh .bench-data/cifar10-real-subset.npz with carry [.whl, .bench-data]"
