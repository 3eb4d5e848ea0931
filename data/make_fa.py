"""Factor-analysis data for specs/factor_analysis*.vi and bench/fa_sklearn.py.

x = W z + mu + e, z ~ N(0, I_2), e ~ N(0, diag(psi^2)), with a fixed 6x2 loading matrix W,
mean mu and noise scales psi. Writes data/fa.npz with `x` (2,000 training examples) and
`x_test` (500 held-out examples), float32, shape [N, 6].

    python3 data/make_fa.py            # seeded: the same file every time
"""

import os

import numpy as np

W = np.array(
    [
        [1.0, 0.0],
        [0.8, 0.4],
        [0.6, -0.7],
        [0.0, 1.2],
        [-0.5, 0.9],
        [0.3, 0.3],
    ]
)
MU = np.array([0.5, -1.0, 0.0, 2.0, 1.0, -0.5])
PSI = np.array([0.3, 0.5, 0.4, 0.6, 0.35, 0.8])


def draw(rng, n):
    z = rng.standard_normal((n, W.shape[1]))
    e = rng.standard_normal((n, W.shape[0])) * PSI
    return (z @ W.T + MU + e).astype(np.float32)


def main():
    rng = np.random.default_rng(20261122)
    x = draw(rng, 2000)
    x_test = draw(rng, 500)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fa.npz")
    np.savez_compressed(out, x=x, x_test=x_test)
    print(f"wrote {out}: x {x.shape}, x_test {x_test.shape}")


if __name__ == "__main__":
    main()
