"""pytorch-fid's calculate_frechet_distance, transcribed (numpy + scipy).

Usage: frechet_reference.py DIM A_MU A_SIGMA B_MU B_SIGMA
Each file holds raw little-endian float64 values. Prints the distance.
"""
import sys

import numpy as np
from scipy import linalg


def calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError("Imaginary component {}".format(np.max(np.abs(covmean.imag))))
        covmean = covmean.real
    tr_covmean = np.trace(covmean)
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean


def main():
    dim = int(sys.argv[1])
    read = lambda path: np.fromfile(path, dtype="<f8")
    mu1, s1, mu2, s2 = (read(p) for p in sys.argv[2:6])
    d = calculate_frechet_distance(mu1, s1.reshape(dim, dim), mu2, s2.reshape(dim, dim))
    print(repr(float(d)))


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    main()
