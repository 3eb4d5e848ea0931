"""NumPyro reference for vic's VAE (LANGUAGE.md section 1 / specs/vae.vi), throughput only.

The same model and data handling as bench/vae_torch.py: 784-512-512-32 MLPs with ReLU
(jax.example_libraries.stax, registered with numpyro.module), a Normal(loc, softplus(s) +
1e-4) guide, a standard Normal prior, Bernoulli(logits) likelihood, the analytic KL
(TraceMeanField_ELBO), the loss averaged over the batch (numpyro.handlers.scale), dynamic
binarization of each batch, batch 128, Adam(lr=1e-3). The SVI step is jit-compiled.

    python3 bench/vae_numpyro.py throughput --steps 300 --warmup 300

Prints {"impl": "numpyro", "examples_per_second": ...}. Reads Fashion-MNIST from Debian's
dataset-fashion-mnist package (bench/vae_torch.py's loader). Needs: pip install numpyro jax[cpu].
"""

import argparse
import gzip
import json
import os
import struct
import time

import numpy as np
import jax
import jax.numpy as jnp
from jax.example_libraries import stax
import numpyro
import numpyro.distributions as dist
from numpyro.infer import SVI, TraceMeanField_ELBO

FASHION = "/usr/share/datasets/fashion-mnist"
D, H, Z = 784, 512, 32


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def load_train():
    a = read_idx(os.path.join(FASHION, "train-images-idx3-ubyte.gz"))
    return a.reshape(a.shape[0], -1).astype(np.float32) / 255.0


def mlp(out):
    return stax.serial(stax.Dense(H), stax.Relu, stax.Dense(H), stax.Relu, stax.Dense(out))


def model(x, batch):
    decoder = numpyro.module("decoder", mlp(D), (batch, Z))
    with numpyro.handlers.scale(scale=1.0 / batch), numpyro.plate("data", batch):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([Z]).to_event(1))
        numpyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)


def guide(x, batch):
    encoder = numpyro.module("encoder", mlp(2 * Z), (batch, D))
    with numpyro.handlers.scale(scale=1.0 / batch), numpyro.plate("data", batch):
        out = encoder(x)
        loc, s = out[:, :Z], out[:, Z:]
        numpyro.sample("z", dist.Normal(loc, jax.nn.softplus(s) + 1e-4).to_event(1))


def throughput(args):
    xtr = load_train()
    n = xtr.shape[0]
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    svi = SVI(model, guide, numpyro.optim.Adam(1e-3), loss=TraceMeanField_ELBO())
    key = jax.random.PRNGKey(0)
    key, k_init, k_bin = jax.random.split(key, 3)
    x0 = jax.random.bernoulli(k_bin, jnp.asarray(xtr[: args.batch])).astype(jnp.float32)
    state = svi.init(k_init, x0, args.batch)

    @jax.jit
    def step(state, probs, key):
        # Dynamic binarization on the device, as torch.bernoulli in the PyTorch loop.
        x = jax.random.bernoulli(key, probs).astype(jnp.float32)
        return svi.update(state, x, args.batch)

    def run(i, state, key):
        start = (i * args.batch) % (n - args.batch)
        probs = xtr[perm[start : start + args.batch]]
        key, sub = jax.random.split(key)
        state, loss = step(state, probs, sub)
        return state, loss, key

    for i in range(args.warmup):
        state, loss, key = run(i, state, key)
    jax.block_until_ready(loss)
    t0 = time.time()
    for i in range(args.steps):
        state, loss, key = run(args.warmup + i, state, key)
    jax.block_until_ready(loss)
    secs = time.time() - t0
    rate = args.steps * args.batch / secs
    print(json.dumps({"impl": "numpyro", "examples_per_second": rate, "final_loss": float(loss)}))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("throughput")
    q.add_argument("--steps", type=int, default=300)
    q.add_argument("--warmup", type=int, default=300)
    q.add_argument("--batch", type=int, default=128)
    a = p.parse_args()
    throughput(a)
