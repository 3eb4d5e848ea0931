"""Bayesian linear regression data for specs/bayes_regression.vi.

y = w . x + e with x ~ N(0, I_5), e ~ N(0, 0.5^2) and the fixed weights W_TRUE below.
Writes data/blr.npz with `x` [400, 5] and `y` [400] (training) and `x_test` [200, 5],
`y_test` [200] (held out), float32.

    python3 data/make_blr.py            # seeded: the same file every time
"""

import os

import numpy as np

W_TRUE = np.array([1.5, -0.8, 0.0, 0.3, 2.0])
NOISE = 0.5


def draw(rng, n):
    x = rng.standard_normal((n, W_TRUE.size))
    y = x @ W_TRUE + NOISE * rng.standard_normal(n)
    return x.astype(np.float32), y.astype(np.float32)


def main():
    rng = np.random.default_rng(20261204)
    x, y = draw(rng, 400)
    x_test, y_test = draw(rng, 200)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blr.npz")
    np.savez_compressed(out, x=x, y=y, x_test=x_test, y_test=y_test)
    print(f"wrote {out}: x {x.shape}, y {y.shape}, x_test {x_test.shape}")


if __name__ == "__main__":
    main()
