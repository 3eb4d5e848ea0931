"""Linear-dynamical-system data for specs/lds.vi and specs/lds_em.vi.

A 2-D latent state rotating and decaying, z_t = A z_{t-1} + w_t with A = 0.95 R(0.3 rad)
and w_t ~ N(0, 0.2^2 I), from z_0 ~ N(0, I), seen through x_t = C z_t + c + v_t with the
fixed 5 x 2 matrix C, offsets c and v_t ~ N(0, 0.5^2 I), for T = 20 steps. Writes
data/lds.npz with `x` [1000, 20, 5] (training sequences) and `x_test` [500, 20, 5],
float32.

    python3 data/make_lds.py            # seeded: the same file every time
"""

import os

import numpy as np

T, L, D = 20, 2, 5
THETA = 0.3
A = 0.95 * np.array([[np.cos(THETA), -np.sin(THETA)], [np.sin(THETA), np.cos(THETA)]])
C = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-0.5, 1.2], [1.1, -0.4]])
OFFSET = np.array([0.5, -0.3, 0.0, 0.2, -0.6])
Q, R = 0.2, 0.5


def draw(rng, n):
    x = np.empty((n, T, D))
    z = rng.standard_normal((n, L))
    for t in range(T):
        z = z @ A.T + Q * rng.standard_normal((n, L))
        x[:, t] = z @ C.T + OFFSET + R * rng.standard_normal((n, D))
    return x.astype(np.float32)


def main():
    rng = np.random.default_rng(20261205)
    x, x_test = draw(rng, 1000), draw(rng, 500)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lds.npz")
    np.savez_compressed(out, x=x, x_test=x_test)
    print(f"wrote {out}: x {x.shape}, x_test {x_test.shape}")


if __name__ == "__main__":
    main()
