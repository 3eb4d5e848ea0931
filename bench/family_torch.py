"""PyTorch references for the training throughput of vic's other families, each the same
model, batch and optimizer as its spec (PyTorch's default initialization, dynamic
binarization, Adam at the spec's rate, one ELBO sample):

- `conv_vae`: specs/conv_vae.vi: Conv2d(1, 32, 4, 2, 1), Conv2d(32, 64, 4, 2, 1) with
  ReLU, Linear(3136, 256), heads loc and softplus + 1e-4 (16); decoder Linear(16, 256),
  Linear(256, 3136), ConvTranspose2d(64, 32, 4, 2, 1), ConvTranspose2d(32, 1, 4, 2, 1);
  batch 64.
- `cvae`: specs/cvae.vi: prior MLP(one-hot c: 10 -> 400), encoder MLP([x, c] -> 400 ->
  400), decoder MLP([z, c] -> 400 -> 400 -> 784), ReLU, Z = 16, batch 128.
- `m2`: specs/m2.vi: Kingma et al.'s M2 with 1,000 labels: classify MLP(784 -> 500,
  softplus), encode MLP([x, y] -> 500), decode MLP([z, y] -> 500), Z = 50; a step is 100
  unlabelled images with y summed out over the 10 classes plus 100 labelled ones with
  the supervised term 0.1 * -log q(y | x); batch 100, Adam 3e-4.
- `gmvae`: specs/gmvae.vi: q(c | x) MLP(784 -> 512), q(z | x, c) MLP([x, c] -> 512),
  prior_z Linear(10 -> 2 * 16), decoder MLP(16 -> 512 -> 512 -> 784), c summed out over
  10 clusters; batch 128.
- `savae`: specs/savae.vi: a VAE (encoder MLP(784 -> 512), decoder MLP(32 -> 512 -> 512 -> 784))
  whose Gaussian parameters take 20 SGD steps (lr 1, momentum 0.5, each
  parameter's gradient clipped to norm 5) on the batch's loss, differentiated through
  the steps (torch autograd with create_graph, exact second order); batch 64, clip 5.
- `random_function`: specs/random_function.vi: the VAE of specs/vae.vi with a sparse
  variational GP error (64 inducing points over the 784 pixels, RBF, whitened, a full
  Cholesky factor per output) on the encoder's loc and log-scale; batch 128.

    python3 bench/family_torch.py throughput MODEL --steps 50 --warmup 10 [--flush-denormal]

Prints training examples per second as JSON. Reads Fashion-MNIST from Debian's
dataset-fashion-mnist package. `--device cuda` trains on a GPU: the data, the parameters
and every tensor the models make live there, and the timing waits for the device.
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


def mlp(sizes, act=nn.ReLU):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def heads(out, z):
    return out[:, :z], F.softplus(out[:, z:]) + 1e-4


def bce(logits, x):
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def kl_std(loc, scale):
    return (-torch.log(scale) + 0.5 * (scale**2 + loc**2) - 0.5).sum(1)


def kl_normal(qm, qs, pm, ps):
    return (torch.log(ps / qs) + (qs**2 + (qm - pm) ** 2) / (2 * ps**2) - 0.5).sum(1)


class ConvVAE(nn.Module):
    batch, lr = 64, 5e-4

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 256), nn.ReLU(), nn.Linear(256, 32))
        self.dec1 = nn.Sequential(nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 3136), nn.ReLU())
        self.dec2 = nn.Sequential(nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))

    def loss(self, x, y):
        x = x.view(-1, 1, 28, 28)
        loc, scale = heads(self.enc(x), 16)
        z = loc + scale * torch.randn_like(loc)
        logits = self.dec2(self.dec1(z).view(-1, 64, 7, 7))
        return (kl_std(loc, scale) - bce(logits, x)).mean()


class CVAE(nn.Module):
    batch, lr = 128, 1e-3

    def __init__(self):
        super().__init__()
        self.prior = mlp([10, 400, 32])
        self.enc = mlp([794, 400, 400, 32])
        self.dec = mlp([26, 400, 400, 784])

    def loss(self, x, y):
        c = F.one_hot(y, 10).float()
        pm, ps = heads(self.prior(c), 16)
        qm, qs = heads(self.enc(torch.cat([x, c], 1)), 16)
        z = qm + qs * torch.randn_like(qm)
        return (kl_normal(qm, qs, pm, ps) - bce(self.dec(torch.cat([z, c], 1)), x)).mean()


class M2(nn.Module):
    batch, lr = 100, 3e-4

    def __init__(self):
        super().__init__()
        self.cls = mlp([784, 500, 10], nn.Softplus)
        self.enc = mlp([794, 500, 100], nn.Softplus)
        self.dec = mlp([60, 500, 784], nn.Softplus)

    def elbo_given(self, x, y):
        c = F.one_hot(y, 10).float()
        qm, qs = heads(self.enc(torch.cat([x, c], 1)), 50)
        z = qm + qs * torch.randn_like(qm)
        return bce(self.dec(torch.cat([z, c], 1)), x) - kl_std(qm, qs) - math.log(10)

    def loss(self, x, y):
        # Half the batch unlabelled (summed over y), half labelled (as vic's step).
        xu, xl, yl = x[: len(x) // 2], x[len(x) // 2 :], y[len(x) // 2 :]
        logq = F.log_softmax(self.cls(xu), 1)
        q = logq.exp()
        rep = xu.repeat_interleave(10, 0)
        ys = torch.arange(10).repeat(len(xu))
        e = self.elbo_given(rep, ys).view(len(xu), 10)
        unl = (q * (e - logq)).sum(1)
        lab = self.elbo_given(xl, yl)
        sup = F.cross_entropy(self.cls(xl), yl)
        return -(unl.mean() + lab.mean()) / 2 + 0.1 * sup


class GMVAE(nn.Module):
    batch, lr = 128, 1e-3

    def __init__(self):
        super().__init__()
        self.qc = mlp([784, 512, 10])
        self.qz = mlp([794, 512, 32])
        self.pz = nn.Linear(10, 32)
        self.dec = mlp([16, 512, 512, 784])

    def loss(self, x, y):
        b = len(x)
        logq = F.log_softmax(self.qc(x), 1)
        q = logq.exp()
        rep = x.repeat_interleave(10, 0)
        c = F.one_hot(torch.arange(10).repeat(b), 10).float()
        qm, qs = heads(self.qz(torch.cat([rep, c], 1)), 16)
        pm, ps = heads(self.pz(c), 16)
        z = qm + qs * torch.randn_like(qm)
        e = (bce(self.dec(z), rep) - kl_normal(qm, qs, pm, ps)).view(b, 10)
        return -(q * (e - logq + math.log(1 / 10))).sum(1).mean()


class SAVAE(nn.Module):
    batch, lr = 64, 1e-3

    def __init__(self):
        super().__init__()
        self.enc = mlp([784, 512, 64])
        self.dec = mlp([32, 512, 512, 784])

    def bound(self, x, loc, logvar):
        scale = torch.exp(0.5 * logvar)
        z = loc + scale * torch.randn_like(loc)
        return (kl_std(loc, scale) - bce(self.dec(z), x)).mean()

    def loss(self, x, y):
        out = self.enc(x)
        loc, logvar = out[:, :32], 2 * torch.log(F.softplus(out[:, 32:]) + 1e-4)
        p = [torch.zeros_like(loc), torch.zeros_like(logvar)]
        lam = [loc, logvar]
        for _ in range(20):
            g = torch.autograd.grad(self.bound(x, *lam), lam, create_graph=True)
            g = [gi * torch.clamp(5.0 / (gi.norm() + 1e-6), max=1.0) for gi in g]
            p = [0.5 * pi - gi for pi, gi in zip(p, g)]
            lam = [li + 1.0 * pi for li, pi in zip(lam, p)]
        return self.bound(x, *lam)


class RandomFunction(nn.Module):
    batch, lr = 128, 1e-3
    M, O = 64, 64

    def __init__(self):
        super().__init__()
        self.enc = mlp([784, 512, 512, 64])
        self.dec = mlp([32, 512, 512, 784])
        self.u = nn.Parameter(torch.rand(self.M, 784))
        self.log_l = nn.Parameter(torch.tensor(0.5 * math.log(784 / 4)))
        self.log_s2 = nn.Parameter(torch.tensor(math.log(0.1)))
        self.m = nn.Parameter(torch.zeros(self.O, self.M))
        self.lraw = nn.Parameter(torch.zeros(self.O, self.M, self.M))

    def corr(self, a, b):
        d2 = (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T).clamp_min(0)
        return torch.exp(-0.5 * d2 * torch.exp(-2 * self.log_l))

    def loss(self, x, y):
        eye = torch.eye(self.M)
        lc = torch.linalg.cholesky(self.corr(self.u, self.u) + 1e-4 * eye)
        a = torch.linalg.solve_triangular(lc, self.corr(self.u, x), upper=False)
        s2 = self.log_s2.exp()
        lq = torch.tril(self.lraw, -1) + torch.diag_embed(torch.exp(torch.diagonal(self.lraw, dim1=1, dim2=2)))
        mean = (self.m @ a) * s2.sqrt()
        var = s2 * (1 - a.pow(2).sum(0) + (lq.transpose(1, 2) @ a).pow(2).sum(1)).clamp_min(1e-10)
        f = (mean + var.sqrt() * torch.randn_like(mean)).T
        loc, scale = heads(self.enc(x), 32)
        loc, scale = loc + f[:, :32], scale * torch.exp(f[:, 32:])
        z = loc + scale * torch.randn_like(loc)
        kl_gp = 0.5 * (lq.pow(2).sum() + self.m.pow(2).sum() - self.M * self.O - 2 * torch.diagonal(self.lraw, dim1=1, dim2=2).sum())
        return (kl_std(loc, scale) - bce(self.dec(z), x)).mean() + kl_gp / 60000


MODELS = {"conv_vae": ConvVAE, "cvae": CVAE, "m2": M2, "gmvae": GMVAE, "savae": SAVAE, "random_function": RandomFunction}


def throughput(args):
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    # Every tensor a model makes (torch.arange, torch.eye, ...) on the device too. (Not
    # on the CPU: the default-device mode intercepts every call, a cost of its own.)
    if dev.type != "cpu":
        torch.set_default_device(dev)
    xtr = load_fashion()[0].to(dev)
    from seq_torch import read_idx, FASHION
    ytr = torch.from_numpy(read_idx(os.path.join(FASHION, "train-labels-idx1-ubyte.gz")).astype("int64")).to(dev)
    model = MODELS[args.model]()
    opt = torch.optim.Adam(model.parameters(), lr=model.lr)
    n, b = xtr.shape[0], model.batch
    # M2's step holds 100 unlabelled and 100 labelled images.
    rows = 2 * b if args.model == "m2" else b

    def step():
        idx = torch.randint(0, n, (rows,))
        loss = model.loss(torch.bernoulli(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        if args.model == "savae":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(args.warmup):
        step()
    sync()
    t0 = time.time()
    for _ in range(args.steps):
        step()
    sync()
    secs = time.time() - t0
    # Examples of the epoch's pass per second (M2: the unlabelled ones, as vic counts).
    impl = "pytorch" + ("-ftz" if args.flush_denormal else "") + ("" if dev.type == "cpu" else f"-{dev.type}")
    print(json.dumps({"impl": impl, "model": args.model, "examples_per_second": args.steps * b / secs}))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("throughput")
    q.add_argument("model", choices=sorted(MODELS))
    q.add_argument("--steps", type=int, default=50)
    q.add_argument("--warmup", type=int, default=10)
    q.add_argument("--flush-denormal", action="store_true")
    q.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    throughput(a)
