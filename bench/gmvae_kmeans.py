"""The k-means baseline for the Gaussian-mixture VAE's clustering accuracy.

Fits scikit-learn's KMeans (k = 10, k-means++ with 10 restarts) to the 60,000 Fashion-MNIST
training images' pixels (intensities in [0, 1], as vic loads them), assigns the 10,000 test
images to their nearest centre, and prints the clustering accuracy under the best
one-to-one matching of clusters to labels (scipy's Hungarian solver), the measure `vic eval`
reports for the `Cat` latent of specs/gmvae.vi on the test split.

    python3 bench/gmvae_kmeans.py [--seeds 0 1 2] [--json]
"""

import argparse
import json
import os
import sys

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans

sys.path.insert(0, os.path.dirname(__file__))
from seq_torch import FASHION, read_idx  # noqa: E402


def clustering_accuracy(clusters, labels):
    k = max(clusters.max(), labels.max()) + 1
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(-counts)
    return counts[rows, cols].sum() / len(labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    images = lambda name: read_idx(os.path.join(FASHION, name)).reshape(-1, 784).astype(np.float32) / 255.0
    xtr, xte = images("train-images-idx3-ubyte.gz"), images("t10k-images-idx3-ubyte.gz")
    yte = read_idx(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    results = []
    for seed in args.seeds:
        km = KMeans(n_clusters=10, n_init=10, random_state=seed).fit(xtr)
        acc = clustering_accuracy(km.predict(xte), yte)
        results.append({"seed": seed, "test_clustering_accuracy": float(acc)})
        if not args.json:
            print(f"seed {seed}: k-means test clustering accuracy {acc:.4f}")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
