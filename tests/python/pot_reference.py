#!/usr/bin/env python3
"""Reference Wasserstein-2 values from POT for the Rust parity test.

Usage:
    pot_reference.py X.npy Y.npy [--n-projections 100] [--seeds 20] [--first-seed 0]

X and Y are float32 (or float64) arrays of shape (N, D) and (M, D). Prints one
JSON object:

    {"exact_w2": ..., "sliced_w2_mean": ..., "sliced_w2_std": ...,
     "n_seeds": ..., "n_projections": ..., "exact_seconds": ...}

exact_w2 is sqrt(ot.emd2(a, b, M, numItermax=10_000_000)) with uniform weights
and M = ot.dist(x, y) (squared Euclidean), all in float64. The sliced values
are the mean and the sample standard deviation (ddof=1) of
ot.sliced_wasserstein_distance(x, y, n_projections=..., p=2, seed=s) over the
seeds first_seed .. first_seed + seeds - 1, also in float64.
"""

import argparse
import json
import sys
import time
import warnings

import numpy as np
import ot


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("x", help="first point cloud, .npy of shape (N, D)")
    parser.add_argument("y", help="second point cloud, .npy of shape (M, D)")
    parser.add_argument("--n-projections", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()

    x = np.load(args.x).astype(np.float64)
    y = np.load(args.y).astype(np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        print(f"bad shapes: {x.shape} and {y.shape}", file=sys.stderr)
        return 2
    if args.seeds < 2:
        print("--seeds must be at least 2 to estimate a spread", file=sys.stderr)
        return 2

    a = np.full(x.shape[0], 1.0 / x.shape[0])
    b = np.full(y.shape[0], 1.0 / y.shape[0])
    cost = ot.dist(x, y)  # squared Euclidean by default

    start = time.perf_counter()
    with warnings.catch_warnings():
        # Turn "numItermax reached" (a UserWarning) into a hard failure.
        warnings.simplefilter("error", UserWarning)
        exact_cost = ot.emd2(a, b, cost, numItermax=10_000_000)
    exact_seconds = time.perf_counter() - start

    sliced = np.array(
        [
            ot.sliced_wasserstein_distance(
                x, y, n_projections=args.n_projections, p=2, seed=seed
            )
            for seed in range(args.first_seed, args.first_seed + args.seeds)
        ],
        dtype=np.float64,
    )

    result = {
        "exact_w2": float(np.sqrt(max(float(exact_cost), 0.0))),
        "sliced_w2_mean": float(sliced.mean()),
        "sliced_w2_std": float(sliced.std(ddof=1)),
        "n_seeds": int(args.seeds),
        "n_projections": int(args.n_projections),
        "exact_seconds": exact_seconds,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
