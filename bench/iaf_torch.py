"""PyTorch reference for specs/iaf.vi: a VAE whose diagonal Gaussian guide is pushed
through inverse autoregressive flow steps (Kingma et al. 2016), the same model and
training as `vic train specs/iaf.vi`:

- encoder MLP 784-512-512 (ELU) with heads loc (32), scale (softplus + 1e-4, 32) and a
  context h (64); decoder MLP 32-512-512-784 (ELU), Bernoulli logits;
- each flow step its own MADE(z: 32, h: 64) with hidden [320, 320] (ELU) and heads m, s,
  with vic's degrees (inputs 1..Z, context 0, hidden k mod (Z-1) + 1, outputs 1..Z);
  sigma = sigmoid(s + 2), z <- sigma z + (1 - sigma) m, log q -= sum log sigma, z
  reversed between steps;
- the KL by Monte Carlo (log q(z_K) - log p(z_K)), free bits max(mean KL, 0.25),
  Adamax(lr = 2e-3), batch 100, dynamic binarization, PyTorch's default initialization.

    python3 bench/iaf_torch.py train --steps 2 --epochs 10 --iwae 500 --test 2000 --json out.json
    python3 bench/iaf_torch.py throughput --steps 2 --iters 100 [--flush-denormal]

`--steps 0` is the diagonal guide. Reads Fashion-MNIST from Debian's dataset-fashion-mnist.
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

D, Z, C, H, A = 784, 32, 64, 512, 320
FORGET = 2.0


def made_masks(z, ctx, hidden, blocks):
    prev = list(range(1, z + 1)) + [0] * ctx
    masks = []
    for h in hidden:
        deg = [(k % (z - 1)) + 1 if z > 1 else 0 for k in range(h)]
        masks.append(torch.tensor([[1.0 if d >= p else 0.0 for p in prev] for d in deg]))
        prev = deg
    out = [d for _ in range(blocks) for d in range(1, z + 1)]
    masks.append(torch.tensor([[1.0 if d > p else 0.0 for p in prev] for d in out]))
    return masks


class MaskedLinear(nn.Linear):
    def __init__(self, i, o, mask):
        super().__init__(i, o)
        self.register_buffer("mask", mask)

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class Made(nn.Module):
    def __init__(self):
        super().__init__()
        masks = made_masks(Z, C, [A, A], 2)
        widths = [Z + C, A, A, 2 * Z]
        self.layers = nn.ModuleList(MaskedLinear(widths[i], widths[i + 1], masks[i]) for i in range(3))

    def forward(self, z, h):
        x = torch.cat([z, h], 1)
        for i, l in enumerate(self.layers):
            x = l(x)
            if i < 2:
                x = F.elu(x)
        return x[:, :Z], x[:, Z:]


class IafVae(nn.Module):
    def __init__(self, steps):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(D, H), nn.ELU(), nn.Linear(H, H), nn.ELU(), nn.Linear(H, 2 * Z + C))
        self.dec = nn.Sequential(nn.Linear(Z, H), nn.ELU(), nn.Linear(H, H), nn.ELU(), nn.Linear(H, D))
        self.flows = nn.ModuleList(Made() for _ in range(steps))

    def guide(self, x, k=1):
        out = self.enc(x)
        loc, scale, h = out[:, :Z], F.softplus(out[:, Z : 2 * Z]) + 1e-4, out[:, 2 * Z :]
        loc, scale, h = loc.repeat(k, 1), scale.repeat(k, 1), h.repeat(k, 1)
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        log_q = (-0.5 * eps**2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(1)
        for i, made in enumerate(self.flows):
            if i > 0:
                z = z.flip(1)
            m, s = made(z, h)
            s = s + FORGET
            sigma = torch.sigmoid(s)
            z = sigma * z + (1 - sigma) * m
            log_q = log_q - F.logsigmoid(s).sum(1)
        return z, log_q

    def terms(self, x, k=1):
        z, log_q = self.guide(x, k)
        xs = x.repeat(k, 1)
        loglik = -F.binary_cross_entropy_with_logits(self.dec(z), xs, reduction="none").sum(1)
        log_p = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(1)
        return loglik, log_q - log_p


def loss_of(model, x):
    loglik, kl = model.terms(x)
    return torch.clamp(kl.mean(), min=0.25) - loglik.mean()


@torch.no_grad()
def test_elbo(model, xte):
    g = torch.Generator().manual_seed(123)
    total = 0.0
    for i in range(0, xte.shape[0], 500):
        loglik, kl = model.terms(torch.bernoulli(xte[i : i + 500], generator=g))
        total += (loglik - kl).sum().item()
    return total / xte.shape[0]


@torch.no_grad()
def test_iwae(model, xte, k):
    g = torch.Generator().manual_seed(321)
    total = 0.0
    chunk = max(1, 20000 // k)
    for i in range(0, xte.shape[0], chunk):
        x = torch.bernoulli(xte[i : i + chunk], generator=g)
        loglik, kl = model.terms(x, k)
        logw = (loglik - kl).reshape(k, x.shape[0])
        total += (torch.logsumexp(logw, 0) - math.log(k)).sum().item()
    return total / xte.shape[0]


def train(args):
    torch.manual_seed(args.seed)
    xtr, xte = load_fashion()
    xte = xte[: args.test]
    model = IafVae(args.steps)
    opt = torch.optim.Adamax(model.parameters(), lr=2e-3)
    n = xtr.shape[0]
    history = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.time()
        perm = torch.randperm(n)
        for i in range(0, n, 100):
            loss = loss_of(model, torch.bernoulli(xtr[perm[i : i + 100]]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        secs = time.time() - t0
        test = test_elbo(model, xte)
        history.append({"epoch": epoch, "test_elbo": test, "examples_per_second": n / secs})
        print(f"epoch {epoch}: test ELBO {test:.4f}  {n / secs:.0f} ex/s", flush=True)
    result = {"steps": args.steps, "test_elbo": history[-1]["test_elbo"], "history": history}
    if args.iwae:
        result["iwae"] = test_iwae(model, xte, args.iwae)
        result["iwae_samples"] = args.iwae
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    if args.json:
        json.dump(result, open(args.json, "w"), indent=1)


def throughput(args):
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    torch.manual_seed(0)
    xtr, _ = load_fashion()
    model = IafVae(args.steps)
    opt = torch.optim.Adamax(model.parameters(), lr=2e-3)
    n = xtr.shape[0]

    def step(i):
        x = torch.bernoulli(xtr[(i * 100) % (n - 100) :][:100])
        loss = loss_of(model, x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i in range(args.warmup):
        step(i)
    t0 = time.time()
    for i in range(args.iters):
        step(args.warmup + i)
    rate = args.iters * 100 / (time.time() - t0)
    print(json.dumps({"impl": "pytorch" + ("-ftz" if args.flush_denormal else ""), "steps": args.steps, "examples_per_second": rate}))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=2)
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--iwae", type=int, default=500)
    t.add_argument("--test", type=int, default=2000)
    t.add_argument("--json")
    q = sub.add_parser("throughput")
    q.add_argument("--steps", type=int, default=2)
    q.add_argument("--iters", type=int, default=100)
    q.add_argument("--warmup", type=int, default=20)
    q.add_argument("--flush-denormal", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    train(a) if a.cmd == "train" else throughput(a)
