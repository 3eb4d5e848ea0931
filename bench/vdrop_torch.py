"""PyTorch reference for specs/lenet_vdrop.vi: LeNet-300-100 (784-300-100-10, ReLU) with
sparse variational dropout on every layer, as Molchanov, Ashukha & Vetrov (2017) write it
(bayesgroup/variational-dropout-sparsifies-dnn, `DenseVarDropOutARD`): each weight's
log sigma^2 learned (log alpha = log sigma^2 - log theta^2, clipped to [-8, 8]), the
local reparameterization trick, the mean of weights with log alpha >= 3 zeroed in
training, their KL approximation; the same optimizer and schedule as the spec (Adam 1e-3
decayed linearly to 0 from half-way, the KL weight ramped over the first 10 epochs),
batch 100. `--point` trains the same network with ordinary weights.

    python3 bench/vdrop_torch.py throughput --iters 200 [--point] [--flush-denormal]
    python3 bench/vdrop_torch.py train --epochs 100 [--point] --json out.json

Reads Fashion-MNIST from Debian's dataset-fashion-mnist package.
"""

import argparse
import gzip
import json
import os
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FASHION = "/usr/share/datasets/fashion-mnist"
K1, K2, K3 = 0.63576, 1.87320, 1.48695


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = struct.unpack(">I", data[:4])[0] & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def load():
    img = lambda n: torch.from_numpy(read_idx(os.path.join(FASHION, n)).reshape(-1, 784).astype(np.float32) / 255.0)
    lab = lambda n: torch.from_numpy(read_idx(os.path.join(FASHION, n)).astype(np.int64))
    return (img("train-images-idx3-ubyte.gz"), lab("train-labels-idx1-ubyte.gz"),
            img("t10k-images-idx3-ubyte.gz"), lab("t10k-labels-idx1-ubyte.gz"))


class LinearSVDO(nn.Linear):
    def __init__(self, i, o):
        super().__init__(i, o)
        self.log_sigma2 = nn.Parameter(torch.full((o, i), -10.0))

    def log_alpha(self):
        return torch.clamp(self.log_sigma2 - torch.log(self.weight**2 + 1e-16), -8.0, 8.0)

    def forward(self, x):
        la = self.log_alpha()
        if self.training:
            w = self.weight * (la < 3.0).float()
            mu = F.linear(x, w, self.bias)
            var = F.linear(x * x, torch.exp(la) * self.weight * self.weight)
            return mu + torch.sqrt(var + 1e-8) * torch.randn_like(mu)
        return F.linear(x, self.weight, self.bias)

    def kl(self):
        la = self.log_alpha()
        return (K1 - K1 * torch.sigmoid(K2 + K3 * la) + 0.5 * F.softplus(-la)).sum()


def net(point):
    layer = nn.Linear if point else LinearSVDO
    return nn.Sequential(layer(784, 300), nn.ReLU(), layer(300, 100), nn.ReLU(), layer(100, 10))


def loss_of(model, x, y, n, kl_weight):
    nll = F.cross_entropy(model(x), y)
    kl = sum(m.kl() for m in model if isinstance(m, LinearSVDO))
    return nll + kl_weight * kl / n if not isinstance(kl, int) else nll


def throughput(args):
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    torch.manual_seed(0)
    xtr, ytr, _, _ = load()
    model = net(args.point)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = xtr.shape[0]

    def step(i):
        s = (i * 100) % (n - 100)
        loss = loss_of(model, xtr[s : s + 100], ytr[s : s + 100], n, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i in range(args.warmup):
        step(i)
    t0 = time.time()
    for i in range(args.iters):
        step(args.warmup + i)
    rate = args.iters * 100 / (time.time() - t0)
    print(json.dumps({"impl": "pytorch" + ("-ftz" if args.flush_denormal else ""), "point": args.point, "examples_per_second": rate}))


def train(args):
    torch.manual_seed(args.seed)
    xtr, ytr, xte, yte = load()
    model = net(args.point)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = xtr.shape[0]
    for epoch in range(args.epochs):
        progress = epoch / args.epochs
        for g in opt.param_groups:
            g["lr"] = 1e-3 * (1.0 if progress <= 0.5 else (1 - progress) / 0.5)
        perm = torch.randperm(n)
        model.train()
        for i in range(0, n, 100):
            idx = perm[i : i + 100]
            kw = min(1.0, (epoch + i / n) / 10.0)
            loss = loss_of(model, xtr[idx], ytr[idx], n, kw)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
        out = {"point": args.point, "test_accuracy": acc}
        if not args.point:
            pruned, total = 0, 0
            for m in model:
                if isinstance(m, LinearSVDO):
                    la = m.log_alpha()
                    pruned += (la > 3).sum().item()
                    total += la.numel()
                    m.weight.mul_((la <= 3).float())
            out["pruned_fraction"] = pruned / total
            out["pruned_accuracy"] = (model(xte).argmax(1) == yte).float().mean().item()
    print(json.dumps(out))
    if args.json:
        json.dump(out, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("throughput")
    q.add_argument("--iters", type=int, default=200)
    q.add_argument("--warmup", type=int, default=20)
    q.add_argument("--point", action="store_true")
    q.add_argument("--flush-denormal", action="store_true")
    t = sub.add_parser("train")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--point", action="store_true")
    t.add_argument("--json")
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    throughput(a) if a.cmd == "throughput" else train(a)
