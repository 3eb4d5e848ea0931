"""Make data/gmm.npz: a seeded 3-component Gaussian mixture in 2-D with diagonal
covariances (the family of specs/gmm.vi).

Arrays: x [1500, 2] and x_test [500, 2] (float32), labels [1500] and labels_test [500]
(the component each point was drawn from; vic uses them only for the clustering
accuracy of `vic eval`).

Run from the repository root: python3 data/make_gmm.py
"""

import numpy as np

SEED = 20240607
WEIGHTS = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.5]])
SCALES = np.array([[0.8, 0.5], [0.6, 1.0], [1.2, 0.4]])


def draw(rng, n):
    c = rng.choice(len(WEIGHTS), size=n, p=WEIGHTS)
    x = MEANS[c] + SCALES[c] * rng.standard_normal((n, 2))
    return x.astype(np.float32), c.astype(np.int64)


def main():
    rng = np.random.default_rng(SEED)
    x, labels = draw(rng, 1500)
    x_test, labels_test = draw(rng, 500)
    np.savez(
        "data/gmm.npz", x=x, x_test=x_test, labels=labels, labels_test=labels_test
    )


if __name__ == "__main__":
    main()
