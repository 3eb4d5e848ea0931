"""PyTorch reference for specs/m2_supervised.vi: the M2 classifier q(y | x) trained on
1,000 Fashion-MNIST labels only.

The same network (784-500-10, softplus), dynamic binarization, Adam(lr=3e-4), batches of
100 labelled examples, and 1,000 class-balanced labels (100 per class, the first of each
class in a permutation seeded by --seed: the same rule as `train.labels`, not the same
examples, since vic's generator is its own). `--steps` defaults to vic's 590 steps per
epoch times 3 epochs. Prints the test accuracy of argmax q(y | x).

    python3 bench/supervised_torch.py [--steps 1770] [--seed 0] [--json out.json]
"""

import argparse
import gzip
import json
import os

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

FASHION = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load():
    def p(name):
        return os.path.join(FASHION, name)

    xtr = read_idx(p("train-images-idx3-ubyte.gz")).reshape(-1, 784) / 255.0
    ytr = read_idx(p("train-labels-idx1-ubyte.gz"))
    xte = read_idx(p("t10k-images-idx3-ubyte.gz")).reshape(-1, 784) / 255.0
    yte = read_idx(p("t10k-labels-idx1-ubyte.gz"))
    return xtr.astype(np.float32), ytr, xte.astype(np.float32), yte


def balanced(labels, keep, k, rng):
    perm = rng.permutation(len(labels))
    quota = [keep // k + (c < keep % k) for c in range(k)]
    out = []
    for i in perm:
        c = labels[i]
        if quota[c] > 0:
            quota[c] -= 1
            out.append(i)
    return np.array(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=590 * 3)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    xtr, ytr, xte, yte = load()
    idx = balanced(ytr, a.labels, 10, rng)
    xl, yl = torch.tensor(xtr[idx]), torch.tensor(ytr[idx].astype(np.int64))
    net = nn.Sequential(nn.Linear(784, 500), nn.Softplus(), nn.Linear(500, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    order, pos = rng.permutation(len(idx)), 0
    for _ in range(a.steps):
        if pos + 100 > len(order):
            order, pos = rng.permutation(len(idx)), 0
        b = order[pos : pos + 100]
        pos += 100
        x = (torch.rand_like(xl[b]) < xl[b]).float()  # dynamic binarization
        loss = F.cross_entropy(net(x), yl[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        # Test images binarized once, as vic's evaluation does.
        x = (torch.rand(xte.shape) < torch.tensor(xte)).float()
        acc = (net(x).argmax(1).numpy() == yte).mean()
    out = {"labels": a.labels, "steps": a.steps, "test_accuracy": float(acc)}
    print(json.dumps(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
