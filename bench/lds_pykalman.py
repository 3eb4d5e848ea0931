"""vic's Kalman filter (specs/lds.vi, `guide exact`) against pykalman, an independent
implementation of the same model.

1. Evidence: the test log-likelihood of a trained vic run, computed again by pykalman's
   filter from the run's own parameters (model.safetensors), next to `vic eval`'s exact
   log p(x): their relative difference.
2. Fit: pykalman's EM (Ghahramani & Hinton 1996) on the same training data, its test
   log-likelihood next to vic's gradient-trained one.

    python3 bench/lds_pykalman.py RUN [--em-iter 50] [--json out.json]

Needs `pip install pykalman`; `vic eval RUN --json` must have been run into RUN/eval.json
(bench/lds_figure.sh does both).
"""

import argparse
import json
import os
import struct

import numpy as np
from pykalman import KalmanFilter


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + start : 8 + n + end], np.float32).reshape(info["shape"]).astype(np.float64)
    return out


def softplus(v):
    return np.log1p(np.exp(v))


def filter_of(p):
    """The pykalman model of specs/lds.vi's parameters. vic's z0 ~ N(0, s0^2) comes one
    step before the first observed state: pykalman's initial state is z[1] ~
    N(A 0 + b, A S0 A^T + Q)."""
    a, b = p["trans.layer0.weight"], p["trans.layer0.bias"]
    c, d = p["emit.layer0.weight"], p["emit.layer0.bias"]
    # model.safetensors stores a Positive param as its value (`@raw.NAME` is softplus⁻¹).
    s0, q, r = p["s0"], p["q"], p["r"]
    assert np.allclose(q, softplus(p["@raw.q"]), rtol=1e-5)
    q2 = np.diag(q**2)
    return KalmanFilter(
        transition_matrices=a,
        transition_offsets=b,
        transition_covariance=q2,
        observation_matrices=c,
        observation_offsets=d,
        observation_covariance=np.diag(r**2),
        initial_state_mean=b,
        initial_state_covariance=a @ np.diag(s0**2) @ a.T + q2,
    )


def mean_loglik(kf, xs):
    return float(np.mean([kf.loglikelihood(x) for x in xs]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "data", "lds.npz"))
    ap.add_argument("--em-iter", type=int, default=50)
    ap.add_argument("--json")
    args = ap.parse_args()
    data = np.load(args.data)
    xtr, xte = data["x"].astype(np.float64), data["x_test"].astype(np.float64)
    params = read_safetensors(os.path.join(args.run, "model.safetensors"))
    vic_eval = json.load(open(os.path.join(args.run, "eval.json")))
    kf = filter_of(params)
    same = mean_loglik(kf, xte)
    vic_lp = vic_eval["log_px"]
    em_ll = fit_em(xtr, xte, args.em_iter)
    out = {
        "vic_log_px": vic_lp,
        "pykalman_same_parameters": same,
        "relative_difference": abs(vic_lp - same) / abs(same),
        "pykalman_em_test_log_px": em_ll,
        "em_iterations": args.em_iter,
    }
    print(json.dumps(out, indent=1))
    if args.json:
        json.dump(out, open(args.json, "w"), indent=1)


def fit_em(xtr, xte, iters):
    """EM over many i.i.d. sequences with full covariances: pykalman's filter and smoother
    for the E-step of each sequence, the M-step on the sufficient statistics pooled over
    the sequences (Ghahramani & Hinton 1996); pykalman's own `em` takes one sequence."""
    from pykalman.standard import _smooth, _filter, _smooth_pair

    n, t, d = xtr.shape
    k = 2
    rng = np.random.default_rng(0)
    a = np.eye(k) * 0.9
    b = np.zeros(k)
    c = rng.standard_normal((d, k))
    off = xtr.reshape(-1, d).mean(0)
    q = np.eye(k)
    r = np.eye(d)
    m0 = np.zeros(k)
    p0 = np.eye(k)
    for _ in range(iters):
        # E-step: smoothed moments per sequence.
        ezz = np.zeros((k + 1, k + 1))  # [z; 1][z; 1]^T summed over t >= 1 (predecessors)
        ezz_next = np.zeros((k, k + 1))  # z_t [z_{t-1}; 1]^T
        e_curr = np.zeros((k, k))  # z_t z_t^T over t >= 1
        xz = np.zeros((d, k + 1))  # x_t [z_t; 1]^T
        zz_all = np.zeros((k + 1, k + 1))  # [z_t; 1][z_t; 1]^T over all t
        xx = np.zeros((d, d))
        first_m = np.zeros(k)
        first_p = np.zeros((k, k))
        for x in xtr:
            pm, pc, _, fm, fc = _filter(a, c, q, r, b, off, m0, p0, x)
            sm, sc, gain = _smooth(a, fm, fc, pm, pc)
            pair = _smooth_pair(sc, gain)
            for s in range(t):
                z1 = np.append(sm[s], 1.0)
                zz = np.outer(z1, z1)
                zz[:k, :k] += sc[s]
                zz_all += zz
                xz += np.outer(x[s], z1)
                xx += np.outer(x[s], x[s])
                if s >= 1:
                    zp = np.append(sm[s - 1], 1.0)
                    prev = np.outer(zp, zp)
                    prev[:k, :k] += sc[s - 1]
                    ezz += prev
                    cross = np.outer(sm[s], zp)
                    cross[:, :k] += pair[s]
                    ezz_next += cross
                    cur = np.outer(sm[s], sm[s]) + sc[s]
                    e_curr += cur
            first_m += sm[0]
            first_p += sc[0] + np.outer(sm[0], sm[0])
        # M-step.
        ab = ezz_next @ np.linalg.inv(ezz)
        a, b = ab[:, :k], ab[:, k]
        q = (e_curr - ab @ ezz_next.T) / (n * (t - 1))
        q = (q + q.T) / 2
        cc = xz @ np.linalg.inv(zz_all)
        c, off = cc[:, :k], cc[:, k]
        r = (xx - cc @ xz.T) / (n * t)
        r = (r + r.T) / 2
        m0 = first_m / n
        p0 = first_p / n - np.outer(m0, m0)
    kf = KalmanFilter(transition_matrices=a, transition_offsets=b, transition_covariance=q,
                      observation_matrices=c, observation_offsets=off, observation_covariance=r,
                      initial_state_mean=m0, initial_state_covariance=p0)
    return mean_loglik(kf, xte)


if __name__ == "__main__":
    main()
