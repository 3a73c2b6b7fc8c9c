#!/usr/bin/env bash
# The accelerator figures of benchmarks/gpu.py, prepared on a development machine and run on one
# GPU (sized for an 8-minute slot), writing one JSON file, rewritten after each part.
#
#   bash benchmarks/gpu.sh prepare        # here: .whl/ (packages the GPU image lacks) and
#                                         # .gpu/clips.npz (clips of a built CoinRun dataset)
#   bash benchmarks/gpu.sh run OUT_DIR [FLAGS]  # there, from the repository root: OUT_DIR/gpu.json
#                                         # (FLAGS go to benchmarks/gpu.py, e.g. --train-seconds 120)
#   bash benchmarks/gpu.sh dry OUT_DIR    # anywhere: the same code, tiny config, a few steps
#
# The GPU machine has jax, flax, optax, orbax, einops, tqdm, matplotlib and pillow but no
# package index: `prepare` downloads the rest as wheels (dm-pix, which genie.metrics imports)
# and `run` installs them into /tmp/genie-site without touching the image. The image's own flax
# is used: on 2026-11-28 it held jax 0.11.2 and flax 0.12.10, which ran genie, while the flax
# 0.12.8 genie is tested with here fails to import under jax 0.11.2.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

case "${1:-}" in
  prepare)
    dataset=${DATASET:-coinrun_cpu}
    mkdir -p .whl .gpu
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux2014_x86_64 -d .whl 'dm-pix>=0.4.5'
    "$PYTHON" -m benchmarks.gpu --export-clips .gpu/clips.npz --dataset "$dataset"
    du -sh .whl .gpu
    ;;
  run|dry)
    out=${2:?usage: gpu.sh $1 OUT_DIR}
    mkdir -p "$out"
    if [ "$1" = run ] && ls .whl/*.whl >/dev/null 2>&1; then
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/genie-site .whl/*.whl
      export PYTHONPATH=/tmp/genie-site:${PYTHONPATH:-}
    fi
    export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
    flags=()
    [ "$1" = dry ] && flags=(--dry)
    "$PYTHON" -m benchmarks.gpu "${flags[@]}" "${@:3}" --clips .gpu/clips.npz --out "$out/gpu.json" \
      2>&1 | tee "$out/gpu.log"
    ;;
  *)
    sed -n '2,16p' "$0"
    exit 2
    ;;
esac
