"""PyTorch references for vic's sequence families, the same models trained the same way:

- `vrnn`: specs/vrnn.vi, a VRNN (Chung et al. 2015) on binarized Fashion-MNIST read row by
  row (T = 28 rows of W = 28 pixels), GRU state H = 256, Z = 16 per step: a learned prior
  MLP(h) and a posterior MLP(h, x_t) (one hidden ReLU layer of H, heads loc and
  softplus(.) + 1e-4), emission MLP(h, z_t) -> Bernoulli logits, state
  h_t = GRUCell([x_t, z_t], h_{t-1}); the KL of each step analytic. `vrnn_lstm`:
  specs/vrnn_lstm.vi, the same with an LSTMCell (h, c).
- `draw`: specs/draw.vi, DRAW (Gregor et al. 2015) with T = 16 steps, Z = 10, GRU states
  H = 256, a 5 x 5 attention grid (eqs. 19-22, 27, 29; each filter normalized over its
  pixels), the canvas c_t = c_{t-1} + write(h_t), x ~ Bernoulli(logits = c_T).
  `draw_dense`: specs/draw_dense.vi, the same without attention (read the whole image and
  error image, write through a dense layer).

All with PyTorch's default initialization (vic draws the same distributions), dynamic
binarization, Adam with the spec's learning rate and betas, gradients clipped by global
norm as the spec says, batch 64.

    python3 bench/seq_torch.py train vrnn --epochs 5 --iwae 500 --test 2000 --json out.json
    python3 bench/seq_torch.py throughput draw --steps 100 --warmup 20 [--flush-denormal]
    python3 bench/seq_torch.py breakdown vrnn --steps 50     # forward / backward / optimizer

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
import torch.nn.functional as F
from torch import nn

FASHION = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = struct.unpack(">I", data[:4])[0] & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def load_fashion():
    f = lambda name: torch.from_numpy(
        read_idx(os.path.join(FASHION, name)).reshape(-1, 784).astype(np.float32) / 255.0
    )
    return f("train-images-idx3-ubyte.gz"), f("t10k-images-idx3-ubyte.gz")


def heads(out, z):
    """A network's (loc, Positive scale) heads: softplus plus vic's floor of 1e-4."""
    return out[:, :z], F.softplus(out[:, z:]) + 1e-4


def normal_kl(qm, qs, pm, ps):
    return (torch.log(ps / qs) + (qs**2 + (qm - pm) ** 2) / (2 * ps**2) - 0.5).sum(1)


def normal_logpdf(x, m, s):
    return (-0.5 * ((x - m) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)).sum(1)


class VRNN(nn.Module):
    def __init__(self, lstm=False, t=28, w=28, z=16, h=256):
        super().__init__()
        self.t, self.w, self.z, self.h, self.lstm = t, w, z, h, lstm
        self.cell = nn.LSTMCell(w + z, h) if lstm else nn.GRUCell(w + z, h)
        mlp = lambda i, o: nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, o))
        self.prior = mlp(h, 2 * z)
        self.post = mlp(h + w, 2 * z)
        self.emit = mlp(h + z, w)

    def run(self, x, k=1):
        """Per example and sample: (log p(x | z), Σ_t KL_t, log p(x, z) - log q(z)) with
        x [B, 784] repeated k times."""
        b = x.shape[0]
        xs = x.reshape(b, self.t, self.w).repeat(k, 1, 1)
        h = xs.new_zeros(b * k, self.h)
        c = xs.new_zeros(b * k, self.h)
        loglik, kl, logw = 0.0, 0.0, 0.0
        for t in range(self.t):
            xt = xs[:, t]
            pm, ps = heads(self.prior(h), self.z)
            qm, qs = heads(self.post(torch.cat([h, xt], 1)), self.z)
            eps = torch.randn_like(qm)
            zt = qm + qs * eps
            logits = self.emit(torch.cat([h, zt], 1))
            ll = -F.binary_cross_entropy_with_logits(logits, xt, reduction="none").sum(1)
            loglik = loglik + ll
            kl = kl + normal_kl(qm, qs, pm, ps)
            logw = logw + ll + normal_logpdf(zt, pm, ps) - normal_logpdf(zt, qm, qs)
            inp = torch.cat([xt, zt], 1)
            if self.lstm:
                h, c = self.cell(inp, (h, c))
            else:
                h = self.cell(inp, h)
        return loglik, kl, logw


def filterbank(p, side, n):
    """DRAW's filterbanks from the 5 attention parameters (vic's lower/nets/attend.rs)."""
    gx = (side + 1) / 2 * (p[:, 0] + 1)
    gy = (side + 1) / 2 * (p[:, 1] + 1)
    var = torch.exp(p[:, 2])
    delta = (side - 1) / (max(n, 2) - 1) * torch.exp(p[:, 3])
    gamma = torch.exp(p[:, 4])
    off = torch.arange(1, n + 1, dtype=p.dtype) - n / 2 - 0.5
    mux = gx[:, None] + off[None, :] * delta[:, None]
    muy = gy[:, None] + off[None, :] * delta[:, None]
    a = torch.arange(1, side + 1, dtype=p.dtype)
    fx = torch.softmax(-((a[None, None, :] - mux[:, :, None]) ** 2) / (2 * var[:, None, None]), 2)
    fy = torch.softmax(-((a[None, None, :] - muy[:, :, None]) ** 2) / (2 * var[:, None, None]), 2)
    return fx, fy, gamma


class DRAW(nn.Module):
    def __init__(self, attention=True, t=16, z=10, h=256, side=28, n=5):
        super().__init__()
        self.t, self.z, self.h, self.side, self.n, self.attention = t, z, h, side, n, attention
        r = 2 * n * n if attention else 2 * side * side
        self.enc_cell = nn.GRUCell(r + h, h)
        self.dec_cell = nn.GRUCell(z, h)
        self.q = nn.Linear(h, 2 * z)
        if attention:
            self.read_params = nn.Linear(h, 5)
            self.write_params = nn.Linear(h, 5)
            self.patch = nn.Linear(h, n * n)
        else:
            self.write_dense = nn.Linear(h, side * side)

    def read(self, x, xhat, h):
        if not self.attention:
            return torch.cat([x, xhat], 1)
        b = x.shape[0]
        fx, fy, gamma = filterbank(self.read_params(h), self.side, self.n)
        imgs = torch.stack([x, xhat], 1).reshape(b, 2, self.side, self.side)
        g = fy[:, None] @ imgs @ fx[:, None].transpose(2, 3)  # [B, 2, N, N]
        return (g * gamma[:, None, None, None]).reshape(b, -1)

    def write(self, h):
        if not self.attention:
            return self.write_dense(h)
        b = h.shape[0]
        fx, fy, gamma = filterbank(self.write_params(h), self.side, self.n)
        w = self.patch(h).reshape(b, 1, self.n, self.n)
        painted = fy[:, None].transpose(2, 3) @ w @ fx[:, None]  # [B, 1, S, S]
        return (painted / gamma[:, None, None, None]).reshape(b, -1)

    def run(self, x, k=1):
        x = x.repeat(k, 1)
        b = x.shape[0]
        h = x.new_zeros(b, self.h)
        e = x.new_zeros(b, self.h)
        c = x.new_zeros(b, self.side * self.side)
        kl, logw = 0.0, 0.0
        for _ in range(self.t):
            r = self.read(x, x - torch.sigmoid(c), h)
            e = self.enc_cell(torch.cat([r, h], 1), e)
            qm, qs = heads(self.q(e), self.z)
            zt = qm + qs * torch.randn_like(qm)
            kl = kl + normal_kl(qm, qs, torch.zeros_like(qm), torch.ones_like(qs))
            logw = logw + normal_logpdf(zt, 0.0 * zt, torch.ones_like(zt)) - normal_logpdf(zt, qm, qs)
            h = self.dec_cell(zt, h)
            c = c + self.write(h)
        loglik = -F.binary_cross_entropy_with_logits(c, x, reduction="none").sum(1)
        return loglik, kl, logw + loglik


MODELS = {
    "vrnn": (lambda: VRNN(lstm=False), dict(lr=1e-3, betas=(0.9, 0.999), clip=10.0)),
    "vrnn_lstm": (lambda: VRNN(lstm=True), dict(lr=1e-3, betas=(0.9, 0.999), clip=10.0)),
    "draw": (lambda: DRAW(attention=True), dict(lr=1e-3, betas=(0.5, 0.999), clip=5.0)),
    "draw_dense": (lambda: DRAW(attention=False), dict(lr=1e-3, betas=(0.5, 0.999), clip=5.0)),
}


def make(name):
    build, cfg = MODELS[name]
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], betas=cfg["betas"])
    return model, opt, cfg["clip"]


def step(model, opt, clip, x):
    loglik, kl, _ = model.run(torch.bernoulli(x))
    loss = (kl - loglik).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.item()


@torch.no_grad()
def test_elbo(model, xte, seed=123):
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for i in range(0, xte.shape[0], 500):
        loglik, kl, _ = model.run(torch.bernoulli(xte[i : i + 500], generator=g))
        total += (loglik - kl).sum().item()
    return total / xte.shape[0]


@torch.no_grad()
def test_iwae(model, xte, k, seed=321):
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    chunk = max(1, 25000 // k)
    for i in range(0, xte.shape[0], chunk):
        x = torch.bernoulli(xte[i : i + chunk], generator=g)
        _, _, logw = model.run(x, k)  # [k * b], sample-major
        logw = logw.reshape(k, x.shape[0])
        total += (torch.logsumexp(logw, 0) - math.log(k)).sum().item()
    return total / xte.shape[0]


def train(args):
    torch.manual_seed(args.seed)
    xtr, xte = load_fashion()
    xte = xte[: args.test]
    model, opt, clip = make(args.model)
    n = xtr.shape[0]
    history = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.time()
        perm = torch.randperm(n)
        for i in range(0, n, args.batch):
            step(model, opt, clip, xtr[perm[i : i + args.batch]])
        secs = time.time() - t0
        test = test_elbo(model, xte)
        history.append({"epoch": epoch, "test_elbo": test, "seconds": secs, "examples_per_second": n / secs})
        print(f"epoch {epoch}: test ELBO {test:.4f}  {n / secs:.0f} ex/s", flush=True)
    result = {"model": args.model, "test_elbo": history[-1]["test_elbo"], "history": history}
    if args.iwae:
        result["iwae"] = test_iwae(model, xte, args.iwae)
        result["iwae_samples"] = args.iwae
        print(f"final: test ELBO {result['test_elbo']:.4f}  IWAE-{args.iwae} {result['iwae']:.4f}")
    # The KL summed over steps (latents in use: far above 0).
    with torch.no_grad():
        _, kl, _ = model.run(torch.bernoulli(xte[:500], generator=torch.Generator().manual_seed(5)))
    result["kl"] = kl.mean().item()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


def timed(args, breakdown):
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    torch.manual_seed(0)
    xtr, _ = load_fashion()
    model, opt, clip = make(args.model)
    n = xtr.shape[0]
    perm = torch.randperm(n)
    batch = lambda i: torch.bernoulli(xtr[perm[(i * args.batch) % (n - args.batch) :][: args.batch]])
    for i in range(args.warmup):
        step(model, opt, clip, xtr[perm[(i * args.batch) % (n - args.batch) :][: args.batch]])
    fwd, bwd, upd = [], [], []
    t_start = time.time()
    for i in range(args.steps):
        x = batch(args.warmup + i)
        t0 = time.perf_counter()
        loglik, kl, _ = model.run(x)
        loss = (kl - loglik).mean()
        loss.item()
        t1 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        t3 = time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
        upd.append(t3 - t2)
    secs = time.time() - t_start
    med = lambda v: sorted(v)[len(v) // 2] * 1e3
    out = {
        "impl": "pytorch" + ("-ftz" if args.flush_denormal else ""),
        "model": args.model,
        "examples_per_second": args.steps * args.batch / secs,
    }
    if breakdown:
        out.update({"median_ms": {"forward": med(fwd), "backward": med(bwd), "optimizer": med(upd)}})
    print(json.dumps(out))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("model", choices=sorted(MODELS))
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--iwae", type=int, default=500)
    t.add_argument("--test", type=int, default=2000)
    t.add_argument("--json")
    for name in ["throughput", "breakdown"]:
        q = sub.add_parser(name)
        q.add_argument("model", choices=sorted(MODELS))
        q.add_argument("--steps", type=int, default=100)
        q.add_argument("--warmup", type=int, default=20)
        q.add_argument("--batch", type=int, default=64)
        q.add_argument("--flush-denormal", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    if a.cmd == "train":
        train(a)
    else:
        timed(a, a.cmd == "breakdown")
