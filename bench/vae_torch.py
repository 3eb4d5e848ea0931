"""PyTorch reference for vic's VAE (LANGUAGE.md section 1 / specs/vae.vi).

The same model, data handling and training schedule as `vic train specs/vae.vi`:
784-512-512-32 MLPs with ReLU, a Normal(loc, softplus(s) + 1e-4) guide, a standard
Normal prior, Bernoulli(logits) likelihood, analytic KL, dynamic binarization, batch
128, Adam(lr=1e-3), PyTorch's default initialization (which vic also uses).

    python3 bench/vae_torch.py train --epochs 10 --json out.json
    python3 bench/vae_torch.py throughput --steps 200 [--flush-denormal]

Both take `--device cuda` to train on a GPU: the data then lives on the device, each
batch is drawn and binarized there, and every timing waits for the device to finish.

Reads Fashion-MNIST from Debian's dataset-fashion-mnist package.
"""

import argparse
import gzip
import json
import math
import os
import struct
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

FASHION = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def load_fashion():
    train = read_idx(os.path.join(FASHION, "train-images-idx3-ubyte.gz"))
    test = read_idx(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"))
    f = lambda a: torch.from_numpy(a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)
    return f(train), f(test)


class VAE(nn.Module):
    def __init__(self, d=784, h=512, z=32):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2 * z))
        self.dec = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, d))
        self.z = z

    def guide(self, x):
        out = self.enc(x)
        loc, s = out[:, : self.z], out[:, self.z :]
        return loc, F.softplus(s) + 1e-4

    def elbo_terms(self, x):
        loc, scale = self.guide(x)
        z = loc + scale * torch.randn_like(loc)
        logits = self.dec(z)
        loglik = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        kl = (-torch.log(scale) + 0.5 * (scale**2 + loc**2) - 0.5).sum(1)
        return loglik, kl

    def iwae(self, x, k):
        """log (1/K) sum_k p(x, z_k) / q(z_k | x), per example."""
        loc, scale = self.guide(x)
        b = x.shape[0]
        eps = torch.randn(k, b, self.z, device=x.device)
        z = loc + scale * eps
        logits = self.dec(z.reshape(k * b, self.z)).reshape(k, b, -1)
        loglik = -F.binary_cross_entropy_with_logits(logits, x.expand(k, b, -1), reduction="none").sum(2)
        log_prior = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(2)
        log_q = (-0.5 * eps**2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(2)
        logw = loglik + log_prior - log_q
        return torch.logsumexp(logw, 0) - math.log(k)


def binarize(x):
    return torch.bernoulli(x)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def train(args):
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    xtr, xte = (t.to(dev) for t in load_fashion())
    model = VAE().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = xtr.shape[0]
    history = []
    for epoch in range(1, args.epochs + 1):
        sync(dev)
        t0 = time.time()
        perm = torch.randperm(n, device=dev)
        model.train()
        for i in range(0, n, args.batch):
            x = binarize(xtr[perm[i : i + args.batch]])
            loglik, kl = model.elbo_terms(x)
            loss = (kl - loglik).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sync(dev)
        secs = time.time() - t0
        test = test_elbo(model, xte)
        history.append({"epoch": epoch, "test_elbo": test, "seconds": secs, "examples_per_second": n / secs})
        print(f"epoch {epoch}: test ELBO {test:.4f}  {n / secs:.0f} ex/s", flush=True)
    iw = test_iwae(model, xte, args.iwae)
    result = {"test_elbo": history[-1]["test_elbo"], "iwae": iw, "iwae_samples": args.iwae, "history": history}
    print(f"final: test ELBO {result['test_elbo']:.4f}  IWAE-{args.iwae} {iw:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


@torch.no_grad()
def test_elbo(model, xte):
    g = torch.Generator(device=xte.device).manual_seed(123)
    total = 0.0
    for i in range(0, xte.shape[0], 1000):
        x = torch.bernoulli(xte[i : i + 1000], generator=g)
        loglik, kl = model.elbo_terms(x)
        total += (loglik - kl).sum().item()
    return total / xte.shape[0]


@torch.no_grad()
def test_iwae(model, xte, k):
    g = torch.Generator(device=xte.device).manual_seed(321)
    total = 0.0
    b = max(1, 20000 // k)
    for i in range(0, xte.shape[0], b):
        x = torch.bernoulli(xte[i : i + b], generator=g)
        total += model.iwae(x, k).sum().item()
    return total / xte.shape[0]


def throughput(args):
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    xtr = load_fashion()[0].to(dev)
    model = VAE().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = xtr.shape[0]
    perm = torch.randperm(n, device=dev)

    def step(i):
        x = binarize(xtr[perm[(i * args.batch) % (n - args.batch) :][: args.batch]])
        loglik, kl = model.elbo_terms(x)
        loss = (kl - loglik).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i in range(args.warmup):
        step(i)
    sync(dev)
    t0 = time.time()
    for i in range(args.steps):
        step(args.warmup + i)
    sync(dev)
    secs = time.time() - t0
    rate = args.steps * args.batch / secs
    impl = "pytorch" + ("-ftz" if args.flush_denormal else "") + ("" if dev.type == "cpu" else f"-{dev.type}")
    print(json.dumps({"impl": impl, "examples_per_second": rate}))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--iwae", type=int, default=1000)
    t.add_argument("--json")
    t.add_argument("--device", default="cpu")
    q = sub.add_parser("throughput")
    q.add_argument("--steps", type=int, default=300)
    q.add_argument("--warmup", type=int, default=2000)
    q.add_argument("--batch", type=int, default=128)
    q.add_argument("--flush-denormal", action="store_true")
    q.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    train(a) if a.cmd == "train" else throughput(a)
