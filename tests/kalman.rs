//! `guide exact` on a linear-Gaussian state-space model: vic's Kalman filter and smoother
//! against an independent textbook filter written here in f64 (covariance form, explicit
//! gain, Rauch-Tung-Striebel smoother), the gradient of the exact objective against
//! finite differences, and an amortized guide whose ELBO stays below the exact log p(x).
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_range_loop
)]

mod common;

use candle_core::{Device, Tensor};
use common::{lower, param, to_f64};
use vic::lower::objective::{Batch, Settings};
use vic::lower::LoweredModel;
use vic::rng::Rng;

const T: usize = 6;
const L: usize = 2;
const D: usize = 3;

/// A linear dynamical system with a learned initial state.
const LDS: &str = r#"
const T = 6
data x : Real[T, 3]
latent z0 : Real[2]
latent z : Real[T, 2]
param m0 : Real[2] = normal(0, 1)
param s0 : Positive[2] = uniform(0.5, 1.5)
param q : Positive[2] = uniform(0.3, 0.8)
param r : Positive[3] = uniform(0.3, 1.0)
net trans(z: Real[2]) -> Real[2] = linear()
net emit(z: Real[2]) -> Real[3] = linear()
model {
  z0 ~ Normal(m0, s0)
  let s[0] = z0
  for t in 1:T {
    z[t] ~ Normal(trans(s[t - 1]), q)
    x[t] ~ Normal(emit(z[t]), r)
    let s[t] = z[t]
  }
}
guide exact
train { dataset = "unused.npz" }
"#;

type Mat = Vec<Vec<f64>>;

fn zeros(r: usize, c: usize) -> Mat {
    vec![vec![0.0; c]; r]
}
fn mul(a: &Mat, b: &Mat) -> Mat {
    let mut o = zeros(a.len(), b[0].len());
    for i in 0..a.len() {
        for j in 0..b[0].len() {
            o[i][j] = (0..b.len()).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    o
}
fn tr(a: &Mat) -> Mat {
    let mut o = zeros(a[0].len(), a.len());
    for i in 0..a.len() {
        for j in 0..a[0].len() {
            o[j][i] = a[i][j];
        }
    }
    o
}
fn add(a: &Mat, b: &Mat) -> Mat {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p + q).collect())
        .collect()
}
fn sub(a: &Mat, b: &Mat) -> Mat {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p - q).collect())
        .collect()
}
fn col(v: &[f64]) -> Mat {
    v.iter().map(|x| vec![*x]).collect()
}
fn diag(v: &[f64]) -> Mat {
    let mut o = zeros(v.len(), v.len());
    for i in 0..v.len() {
        o[i][i] = v[i];
    }
    o
}
/// Inverse and log-determinant by Gauss-Jordan elimination with partial pivoting.
fn inv_logdet(a: &Mat) -> (Mat, f64) {
    let n = a.len();
    let mut m: Mat = a.clone();
    let mut inv = diag(&vec![1.0; n]);
    let mut logdet = 0.0;
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| m[i][c].abs().total_cmp(&m[j][c].abs()))
            .unwrap();
        m.swap(c, p);
        inv.swap(c, p);
        let piv = m[c][c];
        logdet += piv.abs().ln();
        for j in 0..n {
            m[c][j] /= piv;
            inv[c][j] /= piv;
        }
        for i in 0..n {
            if i != c {
                let f = m[i][c];
                for j in 0..n {
                    m[i][j] -= f * m[c][j];
                    inv[i][j] -= f * inv[c][j];
                }
            }
        }
    }
    (inv, logdet)
}

struct Lds {
    a: Mat,
    ba: Vec<f64>,
    c: Mat,
    bc: Vec<f64>,
    m0: Vec<f64>,
    s0: Vec<f64>,
    q: Vec<f64>,
    r: Vec<f64>,
}

fn weights(model: &LoweredModel, name: &str, rows: usize) -> Mat {
    let (_, v) = model
        .store
        .named()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap();
    let flat = to_f64(v.as_tensor());
    flat.chunks(flat.len() / rows).map(|r| r.to_vec()).collect()
}

fn lds_of(model: &LoweredModel) -> Lds {
    let vec1 = |name: &str| weights(model, name, 1).concat();
    let has = |name: &str| model.program.params.iter().any(|p| p.name == name);
    // A chain started from zeros has a point initial state at 0.
    let (m0, s0) = if has("m0") {
        (param(model, "m0"), param(model, "s0"))
    } else {
        (vec![0.0; L], vec![0.0; L])
    };
    Lds {
        a: weights(model, "trans.layer0.weight", L),
        ba: vec1("trans.layer0.bias"),
        c: weights(model, "emit.layer0.weight", D),
        bc: vec1("emit.layer0.bias"),
        m0,
        s0,
        q: param(model, "q"),
        r: param(model, "r"),
    }
}

/// The textbook Kalman filter and RTS smoother: log p(x), E[z0 | x], E[z_t | x].
fn reference(p: &Lds, x: &[Vec<f64>]) -> (f64, Vec<f64>, Vec<Vec<f64>>) {
    let sq = |v: &[f64]| v.iter().map(|s| s * s).collect::<Vec<_>>();
    let (q, r) = (diag(&sq(&p.q)), diag(&sq(&p.r)));
    let (m0, p0) = (col(&p.m0), diag(&sq(&p.s0)));
    let mut ll = 0.0;
    let (mut m, mut pp) = (m0.clone(), p0.clone());
    let mut pred: Vec<(Mat, Mat)> = Vec::new();
    let mut filt: Vec<(Mat, Mat)> = Vec::new();
    for t in 0..T {
        // Predict from the previous (filtered) state.
        let mp = add(&mul(&p.a, &m), &col(&p.ba));
        let pp_pred = add(&mul(&mul(&p.a, &pp), &tr(&p.a)), &q);
        // Update with x_t.
        let s = add(&mul(&mul(&p.c, &pp_pred), &tr(&p.c)), &r);
        let (s_inv, logdet) = inv_logdet(&s);
        let e = sub(&col(&x[t]), &add(&mul(&p.c, &mp), &col(&p.bc)));
        let quad = mul(&mul(&tr(&e), &s_inv), &e)[0][0];
        ll += -0.5 * (D as f64 * (2.0 * std::f64::consts::PI).ln() + logdet + quad);
        let k = mul(&mul(&pp_pred, &tr(&p.c)), &s_inv);
        m = add(&mp, &mul(&k, &e));
        pp = mul(&sub(&diag(&[1.0; L]), &mul(&k, &p.c)), &pp_pred);
        pred.push((mp, pp_pred));
        filt.push((m.clone(), pp.clone()));
    }
    let mut smooth = vec![filt[T - 1].0.clone(); T];
    for t in (0..T - 1).rev() {
        let (inv, _) = inv_logdet(&pred[t + 1].1);
        let j = mul(&mul(&filt[t].1, &tr(&p.a)), &inv);
        smooth[t] = add(&filt[t].0, &mul(&j, &sub(&smooth[t + 1], &pred[t + 1].0)));
    }
    let (inv, _) = inv_logdet(&pred[0].1);
    let j0 = mul(&mul(&p0, &tr(&p.a)), &inv);
    let z0 = add(&m0, &mul(&j0, &sub(&smooth[0], &pred[0].0)));
    let flat = |m: &Mat| m.iter().map(|r| r[0]).collect::<Vec<_>>();
    (ll, flat(&z0), smooth.iter().map(flat).collect())
}

fn data(n: usize) -> Vec<Vec<Vec<f64>>> {
    let mut rng = Rng::seed(8);
    (0..n)
        .map(|_| {
            (0..T)
                .map(|_| {
                    rng.normal_vec(D)
                        .into_iter()
                        .map(|v| 1.3 * v as f64)
                        .collect()
                })
                .collect()
        })
        .collect()
}

fn batch_of(xs: &[Vec<Vec<f64>>]) -> Batch {
    let flat: Vec<f32> = xs.iter().flatten().flatten().map(|&v| v as f32).collect();
    let t = Tensor::from_vec(flat, (xs.len(), T, D), &Device::Cpu).unwrap();
    Batch::new(vec![Some(t)], xs.len())
}

#[test]
fn the_kalman_filter_and_smoother_match_the_textbook_ones() {
    let model = lower(LDS, 5);
    assert_eq!(
        model.plan.inference,
        vic::plan::Inference::Exact(vic::plan::ExactMethod::Kalman)
    );
    let xs = data(5);
    let batch = batch_of(&xs);
    let mut rng = Rng::seed(1);
    let exact = model.exact_gaussian(&batch, &mut rng).unwrap();
    let got = to_f64(&exact.log_px);
    let means = model.posterior_means(&batch, &mut rng).unwrap();
    let z0 = means
        .iter()
        .find(|(id, _)| *id == 0)
        .map(|(_, t)| to_f64(t))
        .unwrap();
    let z = means
        .iter()
        .find(|(id, _)| *id == 1)
        .map(|(_, t)| to_f64(t))
        .unwrap();
    let p = lds_of(&model);
    let worst = xs
        .iter()
        .enumerate()
        .map(|(i, x)| (got[i] - reference(&p, x).0).abs() / reference(&p, x).0.abs())
        .fold(0.0, f64::max);
    println!(
        "Kalman log p(x) against the textbook f64 filter: largest relative difference {worst:.2e}"
    );
    for (i, x) in xs.iter().enumerate() {
        let (ll, m0, ms) = reference(&p, x);
        let rel = (got[i] - ll).abs() / ll.abs();
        assert!(
            rel < 2e-5,
            "example {i}: log p(x) {} vs the textbook filter's {ll}",
            got[i]
        );
        for k in 0..L {
            assert!((z0[i * L + k] - m0[k]).abs() < 1e-4, "E[z0 | x] {i} {k}");
        }
        for t in 0..T {
            for k in 0..L {
                let v = z[(i * T + t) * L + k];
                assert!(
                    (v - ms[t][k]).abs() < 1e-4,
                    "example {i}: E[z[{}]_{k} | x] {v} vs {}",
                    t + 1,
                    ms[t][k]
                );
            }
        }
    }
    // The objective is the exact log p(x).
    let out = model
        .objective(&batch, &Settings::evaluation(3, true, 10), &mut rng)
        .unwrap();
    assert_eq!(to_f64(&out.bound), got);
}

#[test]
fn a_chain_started_from_zeros_needs_no_initial_latent() {
    let src = LDS
        .replace("latent z0 : Real[2]\n", "")
        .replace(
            "  z0 ~ Normal(m0, s0)\n  let s[0] = z0",
            "  let s[0] = zeros(2)",
        )
        .replace(
            "param m0 : Real[2] = normal(0, 1)\nparam s0 : Positive[2] = uniform(0.5, 1.5)\n",
            "",
        );
    let model = lower(&src, 6);
    let xs = data(3);
    let exact = model
        .exact_gaussian(&batch_of(&xs), &mut Rng::seed(1))
        .unwrap();
    // The textbook filter with a point initial state at 0 (P0 = 0).
    let p = lds_of(&model);
    for (i, x) in xs.iter().enumerate() {
        let (ll, _, ms) = reference(&p, x);
        let got = to_f64(&exact.log_px)[i];
        assert!((got - ll).abs() / ll.abs() < 2e-5, "{got} vs {ll}");
        let z = to_f64(&exact.means[0].1);
        assert!((z[i * T * L] - ms[0][0]).abs() < 1e-4);
    }
}

#[test]
fn gradients_of_the_kalman_objective_match_finite_differences() {
    let model = lower(LDS, 2);
    let batch = batch_of(&data(4));
    let s = Settings::evaluation(1, false, 10);
    let loss = |m: &LoweredModel| -> f64 {
        m.objective(&batch, &s, &mut Rng::seed(0))
            .unwrap()
            .loss
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    let out = model.objective(&batch, &s, &mut Rng::seed(0)).unwrap();
    let grads = out.loss.backward().unwrap();
    let mut checked = 0;
    for (name, var) in model.store.named() {
        let g = to_f64(grads.get(var.as_tensor()).expect("a gradient"));
        let base: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let shape = var.as_tensor().dims().to_vec();
        for i in 0..base.len() {
            let h = 1e-2f32;
            let bump = |delta: f32| {
                let mut v = base.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, shape.clone(), &Device::Cpu).unwrap())
                    .unwrap();
                loss(&model)
            };
            let fd = (bump(h) - bump(-h)) / (2.0 * h as f64);
            var.set(&Tensor::from_vec(base.clone(), shape.clone(), &Device::Cpu).unwrap())
                .unwrap();
            assert!(
                (fd - g[i]).abs() < 3e-3 + 2e-2 * fd.abs(),
                "{name}[{i}]: gradient {} vs finite difference {fd}",
                g[i]
            );
            checked += 1;
        }
    }
    // trans 4 + 2, emit 6 + 3, m0 2, s0 2, q 2, r 3.
    assert_eq!(checked, 24);
}

#[test]
fn an_amortized_guide_on_the_chain_has_its_elbo_below_the_exact_log_px() {
    let src = LDS.replace(
        "guide exact",
        "net post(s: Real[2], x: Real[3]) -> (loc: Real[2], scale: Positive[2]) = linear()\n\
         net post0(x: Real[3]) -> (loc: Real[2], scale: Positive[2]) = linear()\n\
         guide {\n  let (a, b) = post0(x[1])\n  z0 ~ Normal(a, b)\n  let s[0] = z0\n  for t in 1:T {\n    let (m, v) = post(s[t - 1], x[t])\n    z[t] ~ Normal(m, v)\n    let s[t] = z[t]\n  }\n}",
    );
    let model = lower(&src, 3);
    assert!(model.has_exact_log_px());
    let batch = batch_of(&data(6));
    let mut rng = Rng::seed(4);
    let exact = to_f64(&model.exact_gaussian(&batch, &mut rng).unwrap().log_px);
    let elbo = to_f64(
        &model
            .objective(&batch, &Settings::evaluation(500, false, 10), &mut rng)
            .unwrap()
            .bound,
    );
    for (e, l) in elbo.iter().zip(&exact) {
        assert!(e < l, "ELBO {e} above log p(x) {l}");
    }
}
