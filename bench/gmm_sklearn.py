"""Fit the 3-component diagonal Gaussian mixture of specs/gmm.vi to data/gmm.npz with
vic (`guide exact`: gradient ascent on the exact log-likelihood) and with scikit-learn's
GaussianMixture (EM, covariance_type="diag"), the best of several seeds on each side,
and print the mean log-likelihood per example of each on the training data `x` (and the
held-out `x_test`) with their relative difference.

Run from the repository root after `cargo build --release`:
    python3 bench/gmm_sklearn.py [--seeds 0 1 2 3 4] [--vic target/release/vic]
Exits with status 1 when the relative difference on `x` exceeds 1e-3.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from sklearn.mixture import GaussianMixture


def vic_loglik(vic, run, data):
    out = subprocess.run(
        [vic, "eval", run, "--dataset", data, "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--vic", default="target/release/vic")
    ap.add_argument("--spec", default="specs/gmm.vi")
    ap.add_argument("--data", default="data/gmm.npz")
    args = ap.parse_args()

    d = np.load(args.data)
    x, x_test = d["x"].astype(np.float64), d["x_test"].astype(np.float64)

    best_sk = None
    for s in args.seeds:
        gm = GaussianMixture(
            n_components=3,
            covariance_type="diag",
            reg_covar=1e-9,
            tol=1e-10,
            max_iter=10000,
            random_state=s,
        ).fit(x)
        ll = gm.score(x)
        print(f"sklearn seed {s}: log p(x) per example {ll:.6f} (train), {gm.score(x_test):.6f} (test)")
        if best_sk is None or ll > best_sk[0]:
            best_sk = (ll, gm.score(x_test), s)

    best_vic = None
    with tempfile.TemporaryDirectory() as tmp:
        # `vic eval` scores the test split: a copy of the data whose test split is `x`.
        same = os.path.join(tmp, "train_as_test.npz")
        np.savez(same, x=d["x"], x_test=d["x"], labels=d["labels"], labels_test=d["labels"])
        for s in args.seeds:
            run = os.path.join(tmp, f"run{s}")
            subprocess.run(
                [args.vic, "train", args.spec, "--out", run, "--set", f"train.seed={s}"],
                check=True,
                capture_output=True,
            )
            train = vic_loglik(args.vic, run, same)
            test = vic_loglik(args.vic, run, os.path.abspath(args.data))
            acc = test.get("clustering_accuracy", {}).get("c", float("nan"))
            print(
                f"vic seed {s}: log p(x) per example {train['elbo']:.6f} (train), "
                f"{test['elbo']:.6f} (test), test clustering accuracy {acc:.4f}"
            )
            if best_vic is None or train["elbo"] > best_vic[0]:
                best_vic = (train["elbo"], test["elbo"], s)

    rel = abs(best_vic[0] - best_sk[0]) / abs(best_sk[0])
    print(f"best sklearn (seed {best_sk[2]}): train {best_sk[0]:.6f}, test {best_sk[1]:.6f}")
    print(f"best vic     (seed {best_vic[2]}): train {best_vic[0]:.6f}, test {best_vic[1]:.6f}")
    print(f"relative difference (train): {rel:.2e}")
    sys.exit(0 if rel <= 1e-3 else 1)


if __name__ == "__main__":
    main()
