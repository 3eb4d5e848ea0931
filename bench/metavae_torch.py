"""PyTorch reference for the training throughput of specs/metavae.vi: MetaVAE (Wu, Choi,
Goodman & Ermon 2020) on binarized Fashion-MNIST rotated by 18 angles, the even ones
trained, as `vic train specs/metavae.vi` trains it:

- each step holds a batch of 64 examples of every training member (9 rotations), each
  with a context set of 10 other examples of the same member; the loss is the mean over
  the members (as the reference, mhw32/meta-inference-public, trains);
- the images rotated bilinearly with zeros outside (torch's affine_grid / grid_sample,
  align_corners=True: about the image's centre), then dynamically binarized;
- summary: DeepSets, phi = Linear(784, 400), Linear(400, 400) with leaky ReLU, mean
  pool, rho = Linear(400, 400) with leaky ReLU, then Linear(400, 400) (vic's `deepsets`);
- encoder MLP([x, summary]: 1184 -> 400 -> 400, ReLU) with heads loc and
  softplus(.) + 1e-4 (32 each); one decoder MLP(32 -> 400 -> 400 -> 784, ReLU) per
  training member (`@per_member`), Bernoulli logits; the KL analytic; Adam(1e-3).

    python3 bench/metavae_torch.py throughput --steps 30 --warmup 5 [--flush-denormal]

Prints training examples (queries) per second as JSON. Reads Fashion-MNIST from
Debian's dataset-fashion-mnist package.
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from seq_torch import load_fashion  # noqa: E402

D, Z, H, M = 784, 32, 400, 10
ANGLES = [-180 + 20 * i for i in range(18)]
TRAIN = ANGLES[0::2]


def mlp(sizes, act):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class MetaVAE(nn.Module):
    def __init__(self, members):
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(D, H), nn.LeakyReLU(0.01), nn.Linear(H, H), nn.LeakyReLU(0.01))
        self.rho = nn.Sequential(nn.Linear(H, H), nn.LeakyReLU(0.01), nn.Linear(H, H))
        self.enc = mlp([D + H, H, H, 2 * Z], nn.ReLU)
        self.dec = nn.ModuleList([mlp([Z, H, H, D], nn.ReLU) for _ in range(members)])

    def loss(self, x, s, k):
        summary = self.rho(self.phi(s).mean(1))
        out = self.enc(torch.cat([x, summary], 1))
        loc, scale = out[:, :Z], F.softplus(out[:, Z:]) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        logits = self.dec[k](z)
        loglik = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        kl = (-torch.log(scale) + 0.5 * (scale**2 + loc**2) - 0.5).sum(1)
        return (kl - loglik).mean()


def rotate(imgs, degrees):
    """Rotate [N, 784] images by `degrees` counter-clockwise, bilinear, zeros outside."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=imgs.dtype)
    n = imgs.shape[0]
    grid = F.affine_grid(theta.expand(n, 2, 3), (n, 1, 28, 28), align_corners=True)
    return F.grid_sample(imgs.view(n, 1, 28, 28), grid, align_corners=True, padding_mode="zeros").view(n, D)


def throughput(args):
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    torch.manual_seed(0)
    xtr, _ = load_fashion()
    model = MetaVAE(len(TRAIN))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = xtr.shape[0]

    def step():
        loss = 0.0
        for k, angle in enumerate(TRAIN):
            q = torch.randint(0, n, (args.batch,))
            s = torch.randint(0, n, (args.batch * M,))
            x = torch.bernoulli(rotate(xtr[q], angle))
            sets = torch.bernoulli(rotate(xtr[s], angle)).view(args.batch, M, D)
            loss = loss + model.loss(x, sets, k)
        loss = loss / len(TRAIN)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    t0 = time.time()
    for _ in range(args.steps):
        step()
    secs = time.time() - t0
    rate = args.steps * args.batch * len(TRAIN) / secs
    print(json.dumps({"impl": "pytorch" + ("-ftz" if args.flush_denormal else ""), "model": "metavae", "examples_per_second": rate}))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("throughput")
    q.add_argument("--steps", type=int, default=30)
    q.add_argument("--warmup", type=int, default=5)
    q.add_argument("--batch", type=int, default=64)
    q.add_argument("--flush-denormal", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    throughput(a)
