#!/usr/bin/env bash
# The GPU checks of issue 12, prepared here and run on a lent GPU machine
# (the `device` tool), which has CUDA, python3 with torch 2.11.0+cu130 and
# torchvision, but no Rust toolchain, no diffusers or pytorch-fid, and no
# network.
#
#   scripts/gpu_session.sh pack        # here: build, and put what the machine
#                                      # needs into .gpu/ (about 30 MB)
#   scripts/gpu_session.sh run [cpu]   # there, from the repository root, with
#                                      # carry [".gpu"]; results into $OUT
#                                      # (`cpu`: the same plumbing on the CPU,
#                                      # tiny sizes, no CUDA tests: a dry run here)
#
# `run` puts the binaries back where their build expects them (the tests
# name /work/main and its target/ at build time), links .venv to the
# machine's torch, installs the carried wheels into /tmp/site, and makes a
# TorchScript of pytorch-fid's Inception with random weights (the real
# weights, 87 MB, exceed what a call carries; the speed is the same). Then:
# the CUDA tests, one round of the CIFAR-10 configuration (ours against
# PyTorch + diffusers), and Inception's throughput (ours against
# pytorch-fid), each with its output under $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILT=/work/main

pack() {
  cargo build --release --locked --bins --tests --benches
  rm -rf .gpu && mkdir -p .gpu/bin .gpu/whl
  cp target/release/rl-run .gpu/bin/
  # The newest build of each bench executable the checks run.
  for name in sft_pg_round inception_features; do
    for f in $(ls -t target/release/deps/${name}-* | grep -v '\.d$'); do
      if [ -x "$f" ] && [ ! -e ".gpu/bin/$name" ]; then cp "$f" ".gpu/bin/$name"; fi
    done
  done
  # The two CUDA test executables (tests/cuda.rs, agents/tests/cuda.rs),
  # told apart by the tests they list.
  for f in $(ls -t target/release/deps/cuda-* | grep -v '\.d$'); do
    [ -x "$f" ] || continue
    local tests
    tests=$("$f" --list --ignored 2>/dev/null || true)
    if [[ $tests == *every_agent_trains_on_cuda* ]] && [ ! -e .gpu/bin/cuda ]; then
      cp "$f" .gpu/bin/cuda
    elif [[ $tests == *cuda_and_cpu_optimisers_agree* ]] && [ ! -e .gpu/bin/cuda_agents ]; then
      cp "$f" .gpu/bin/cuda_agents
    fi
  done
  test -e .gpu/bin/cuda && test -e .gpu/bin/cuda_agents
  .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: -d .gpu/whl \
    "diffusers==0.42.1" "pytorch-fid==0.3.0"
  du -sh .gpu
}

run() {
  local device=${1:-cuda}
  local out=${OUT:-/tmp/gpu_session_out}
  mkdir -p "$out"
  if [ ! -e "$BUILT" ]; then
    mkdir -p "$(dirname "$BUILT")"
    ln -s "$PWD" "$BUILT"
  elif [ "$(cd "$BUILT" && pwd -P)" != "$(pwd -P)" ]; then
    echo "note: $BUILT is another checkout; the binaries read its files" >&2
  fi
  mkdir -p target/release/deps .venv/bin
  cp .gpu/bin/rl-run target/release/rl-run
  if [ ! -e .venv/torch ]; then
    ln -sfn "$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')" .venv/torch
    # A wrapper, not a link: a virtual environment's python finds its
    # packages from the path it is started by.
    printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" > .venv/bin/python
    chmod +x .venv/bin/python
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  local network=models/fid-inception/inception-2015-12-05.pt
  if [ ! -f "$network" ]; then
    mkdir -p models/fid-inception
    .venv/bin/python - <<'PY'
import torch, sys
sys.path.insert(0, "tests/python")
import pytorch_fid_reference as ref
torch.manual_seed(0)
torch.save(ref.fid_module().state_dict(), "/tmp/random_inception.pth")
PY
    .venv/bin/python scripts/convert_weights.py fid-inception /tmp/random_inception.pth "$network"
  fi
  (nvidia-smi || true) > "$out/device.txt" 2>&1
  if [ "$device" = cuda ]; then
    { .gpu/bin/cuda --ignored --test-threads 1; .gpu/bin/cuda_agents --ignored; } 2>&1 | tee "$out/cuda_tests.txt"
    .gpu/bin/sft_pg_round --chains 128 --steps 10 --n-critic 5 --n-generator 10 \
      --threads 8 --runs 3 --device cuda 2>&1 | tee "$out/round.txt"
    .gpu/bin/inception_features --n 5000 --batch 200 --threads 8 --runs 3 \
      --device cuda 2>&1 | tee "$out/inception.txt"
  else
    .gpu/bin/sft_pg_round --chains 2 --steps 2 --n-critic 1 --n-generator 1 \
      --threads 2 --runs 1 --device cpu 2>&1 | tee "$out/round.txt"
    .gpu/bin/inception_features --n 4 --batch 2 --threads 2 --runs 1 \
      --device cpu 2>&1 | tee "$out/inception.txt"
  fi
}

case "${1:-}" in
  pack) pack ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 pack | run [cpu]" >&2; exit 2 ;;
esac
