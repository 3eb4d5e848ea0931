"""Figure A: `guide exact` factor analysis against scikit-learn's FactorAnalysis.

Trains specs/factor_analysis.vi (D=6, L=2, full batch, exact marginal likelihood) with
vic, fits sklearn.decomposition.FactorAnalysis(n_components=2) by its EM/SVD maximum
likelihood on the same 2,000 training examples of data/fa.npz, and prints the mean
log-likelihood per example of both (sklearn's score()) on the training data and on the
500 held-out examples, with the relative differences. Exits 1 if a relative difference
exceeds 1e-3.

    cargo build --release && python3 bench/fa_sklearn.py [--vic target/release/vic]
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from sklearn.decomposition import FactorAnalysis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vic", default=os.path.join(ROOT, "target", "release", "vic"))
    ap.add_argument("--tolerance", type=float, default=1e-3)
    args = ap.parse_args()

    data = np.load(os.path.join(ROOT, "data", "fa.npz"))
    x, x_test = data["x"].astype(np.float64), data["x_test"].astype(np.float64)
    fa = FactorAnalysis(n_components=2, tol=1e-10, max_iter=100_000).fit(x)
    sk_train, sk_test = fa.score(x), fa.score(x_test)

    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        spec = os.path.join(ROOT, "specs", "factor_analysis.vi")
        subprocess.run([args.vic, "train", spec, "--out", run], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = subprocess.run([args.vic, "eval", run, "--json"], check=True,
                             capture_output=True, text=True).stdout
        vic_test = json.loads(out.splitlines()[0])["log_px"]
        with open(os.path.join(run, "metrics.csv")) as f:
            last = list(csv.DictReader(f))[-1]
        # Full batch: the last step's training bound is the exact log p(x) of all 2,000
        # training examples (at the parameters before that step).
        vic_train = float(last["train_bound"])
        epochs = last["epoch"]

    print(f"data/fa.npz: {len(x)} training, {len(x_test)} held-out examples, D=6, L=2")
    print(f"vic guide exact: {epochs} full-batch epochs")
    ok = True
    for what, v, s in [("train", vic_train, sk_train), ("held-out", vic_test, sk_test)]:
        rel = abs(v - s) / abs(s)
        ok &= rel <= args.tolerance
        print(f"{what:9s} mean log p(x): vic {v:.6f}  sklearn {s:.6f}  relative difference {rel:.2e}")
    print("within" if ok else "NOT within", f"{args.tolerance:g} relative")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
