//! Enumeration of discrete latents against sums computed independently in f64: the
//! ELBO of an enumerated guide (one and two enumerated sites, a `param` indexed by a
//! `Cat` value, a continuous latent drawn given the enumerated value), its IWAE bound,
//! its gradient (finite differences), and `guide exact`'s log p(x) and responsibilities.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_range_loop
)]

mod common;

use candle_core::{Device, Tensor};
use common::{log_softmax, logsumexp, lower, param, to_f64};
use vic::lower::objective::{Batch, Outcome, Settings};
use vic::lower::LoweredModel;
use vic::rng::Rng;

/// A Cat(3) latent `c` and a Binary latent `b`, both enumerated by the guide; the
/// observation's mean is a `param` row selected by `c`, shifted when `b` is 1.
const TWO_SITES: &str = r#"
const K = 3
data x : Real[2]
latent c : Cat(K)
latent b : Binary
param w : Real[K] = normal(0, 1)
param means : Real[K, 2] = normal(0, 2)
param scales : Positive[K, 2] = uniform(0.5, 1.5)
param shift : Real[2] = normal(0, 1)
param qc : Real[K] = normal(0, 1)
param qb : Real = normal(0, 1)
model {
  c ~ Categorical(logits = w)
  b ~ Bernoulli(logits = 0.5)
  x ~ Normal(means[c] + shift * b, scales[c])
}
guide {
  c ~ Categorical(logits = qc)
  b ~ Bernoulli(logits = qb)
}
"#;

/// The Gaussian mixture with `guide exact`.
const GMM_EXACT: &str = r#"
const K = 3
data x : Real[2]
latent c : Cat(K)
param w : Real[K] = normal(0, 1)
param means : Real[K, 2] = normal(0, 2)
param scales : Positive[K, 2] = uniform(0.5, 1.5)
model {
  c ~ Categorical(logits = w)
  x ~ Normal(means[c], scales[c])
}
guide exact
"#;

/// An enumerated `c` and a Normal `z` drawn given it (rows multiply before `z` is drawn).
const MIXED: &str = r#"
const K = 3
data x : Real[2]
latent c : Cat(K)
latent z : Real[2]
param w : Real[K] = normal(0, 1)
param means : Real[K, 2] = normal(0, 2)
param qc : Real[K] = normal(0, 1)
param qm : Real[K, 2] = normal(0, 1)
param qs : Positive[2] = uniform(0.5, 1.0)
model {
  c ~ Categorical(logits = w)
  z ~ Normal(0, 1)
  x ~ Normal(means[c] + z, 1)
}
guide {
  c ~ Categorical(logits = qc)
  z ~ Normal(qm[c], qs)
}
"#;

const XS: [[f32; 2]; 4] = [[0.3, -1.2], [2.0, 0.5], [-1.5, 1.0], [0.0, 0.0]];

fn batch() -> Batch {
    let flat: Vec<f32> = XS.iter().flatten().copied().collect();
    Batch::new(
        vec![Some(Tensor::from_vec(flat, (4, 2), &Device::Cpu).unwrap())],
        4,
    )
}

fn log_sigmoid(a: f64) -> f64 {
    -(1.0 + (-a).exp()).ln()
}

fn log_normal(x: f64, m: f64, s: f64) -> f64 {
    -0.5 * ((x - m) / s).powi(2) - s.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
}

/// The objective on [`batch`], drawn with seed 1.
fn outcome(model: &LoweredModel, settings: &Settings) -> Outcome {
    model
        .objective(&batch(), settings, &mut Rng::seed(1))
        .unwrap()
}

fn bound(model: &LoweredModel, settings: &Settings) -> Vec<f64> {
    to_f64(&outcome(model, settings).bound)
}

/// `(log p(x, c, b), log q(c), log q(b))` for every (example, c, b).
struct TwoSites {
    w: Vec<f64>,
    means: Vec<f64>,
    scales: Vec<f64>,
    shift: Vec<f64>,
    qc: Vec<f64>,
    qb: f64,
}

impl TwoSites {
    fn of(model: &LoweredModel) -> TwoSites {
        TwoSites {
            w: param(model, "w"),
            means: param(model, "means"),
            scales: param(model, "scales"),
            shift: param(model, "shift"),
            qc: param(model, "qc"),
            qb: param(model, "qb")[0],
        }
    }

    fn log_joint(&self, x: &[f32; 2], c: usize, b: usize) -> f64 {
        let lw = log_softmax(&self.w);
        let lb = if b == 1 {
            log_sigmoid(0.5)
        } else {
            log_sigmoid(-0.5)
        };
        let mut lp = lw[c] + lb;
        for d in 0..2 {
            let m = self.means[c * 2 + d] + self.shift[d] * b as f64;
            lp += log_normal(x[d] as f64, m, self.scales[c * 2 + d]);
        }
        lp
    }

    fn log_q(&self, c: usize, b: usize) -> f64 {
        let lq = log_softmax(&self.qc);
        lq[c]
            + if b == 1 {
                log_sigmoid(self.qb)
            } else {
                log_sigmoid(-self.qb)
            }
    }

    fn elbo(&self, x: &[f32; 2]) -> f64 {
        let mut e = 0.0;
        for c in 0..3 {
            for b in 0..2 {
                let lq = self.log_q(c, b);
                e += lq.exp() * (self.log_joint(x, c, b) - lq);
            }
        }
        e
    }

    fn log_px(&self, x: &[f32; 2]) -> f64 {
        let terms: Vec<f64> = (0..3)
            .flat_map(|c| (0..2).map(move |b| (c, b)))
            .map(|(c, b)| self.log_joint(x, c, b))
            .collect();
        logsumexp(&terms)
    }
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

#[test]
fn two_enumerated_sites_give_the_exact_elbo_and_iwae_bound() {
    let model = lower(TWO_SITES, 11);
    let h = TwoSites::of(&model);
    // Any number of samples: with no continuous latent the enumerated ELBO is exact.
    for samples in [1, 3] {
        let got = bound(&model, &Settings::evaluation(samples, false, 100));
        for (g, x) in got.iter().zip(&XS) {
            close(*g, h.elbo(x), 1e-5, &format!("ELBO, {samples} samples"));
        }
        // The IWAE bound with enumeration: sum over the support of p(x, c, b), here
        // exactly log p(x).
        let got = bound(&model, &Settings::evaluation(samples, true, 100));
        for (g, x) in got.iter().zip(&XS) {
            close(*g, h.log_px(x), 1e-5, &format!("IWAE, {samples} samples"));
        }
    }
    // The per-latent terms are expectations under q: KL(c) is the exact KL.
    let out = outcome(&model, &Settings::evaluation(1, false, 100));
    let kl_c = out
        .terms
        .iter()
        .find(|t| t.name == "KL(c)")
        .unwrap()
        .value
        .to_scalar::<f32>()
        .unwrap() as f64;
    let (lq, lp) = (log_softmax(&h.qc), log_softmax(&h.w));
    let want: f64 = (0..3).map(|c| lq[c].exp() * (lq[c] - lp[c])).sum();
    close(kl_c, want, 1e-5, "KL(c)");
}

#[test]
fn the_enumerated_elbo_gradient_matches_finite_differences() {
    let model = lower(TWO_SITES, 12);
    let settings = Settings::evaluation(1, false, 100);
    let out = outcome(&model, &settings);
    let grads = out.loss.backward().unwrap();
    let vars = model.store.named();
    let var = |name: &str| vars.iter().find(|(n, _)| n == name).unwrap().1.clone();
    // The loss is -mean ELBO; perturb the guide's logits (stored unconstrained) and the
    // means, in f64.
    let h0 = TwoSites::of(&model);
    let loss = |h: &TwoSites| -> f64 { -XS.iter().map(|x| h.elbo(x)).sum::<f64>() / 4.0 };
    let eps = 1e-5;
    for (name, len) in [("qc", 3), ("qb", 1), ("means", 6)] {
        let g = grads
            .get(var(name).as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for i in 0..len {
            let bump = |d: f64| {
                let mut h = clone(&h0);
                match name {
                    "qc" => h.qc[i] += d,
                    "qb" => h.qb += d,
                    _ => h.means[i] += d,
                }
                loss(&h)
            };
            let fd = (bump(eps) - bump(-eps)) / (2.0 * eps);
            close(g[i] as f64, fd, 1e-3, &format!("d loss / d {name}[{i}]"));
        }
    }
}

fn clone(h: &TwoSites) -> TwoSites {
    TwoSites {
        w: h.w.clone(),
        means: h.means.clone(),
        scales: h.scales.clone(),
        shift: h.shift.clone(),
        qc: h.qc.clone(),
        qb: h.qb,
    }
}

#[test]
fn a_latent_drawn_given_an_enumerated_value_is_weighted_by_its_probability() {
    let model = lower(MIXED, 13);
    let (w, means, qc, qm, qs) = (
        param(&model, "w"),
        param(&model, "means"),
        param(&model, "qc"),
        param(&model, "qm"),
        param(&model, "qs"),
    );
    let (lw, lq) = (log_softmax(&w), log_softmax(&qc));
    // E_q(z|c) log N(x; m_c + z, 1) = log N(x; m_c + mu_c, 1) - s^2 / 2 per dimension, and
    // KL(N(mu, s) || N(0, 1)) = (mu^2 + s^2 - 1) / 2 - log s.
    let want = |x: &[f32; 2]| -> f64 {
        (0..3)
            .map(|c| {
                let mut t = lw[c] - lq[c];
                for d in 0..2 {
                    let (mu, s) = (qm[c * 2 + d], qs[d]);
                    t += log_normal(x[d] as f64, means[c * 2 + d] + mu, 1.0) - s * s / 2.0;
                    t -= (mu * mu + s * s - 1.0) / 2.0 - s.ln();
                }
                lq[c].exp() * t
            })
            .sum()
    };
    let got = bound(&model, &Settings::evaluation(4000, false, 100));
    for (g, x) in got.iter().zip(&XS) {
        close(*g, want(x), 2e-2, "ELBO with z drawn given c");
    }
}

#[test]
fn guide_exact_gives_log_p_x_and_the_responsibilities() {
    let model = lower(GMM_EXACT, 14);
    let (w, means, scales) = (
        param(&model, "w"),
        param(&model, "means"),
        param(&model, "scales"),
    );
    let lw = log_softmax(&w);
    let log_joint = |x: &[f32; 2]| -> Vec<f64> {
        (0..3)
            .map(|c| {
                lw[c]
                    + (0..2)
                        .map(|d| log_normal(x[d] as f64, means[c * 2 + d], scales[c * 2 + d]))
                        .sum::<f64>()
            })
            .collect()
    };
    for iwae in [false, true] {
        let got = bound(&model, &Settings::evaluation(1, iwae, 100));
        for (g, x) in got.iter().zip(&XS) {
            close(*g, logsumexp(&log_joint(x)), 1e-5, "exact log p(x)");
        }
    }
    let means_out = model.posterior_means(&batch(), &mut Rng::seed(1)).unwrap();
    assert_eq!(means_out.len(), 1);
    let resp = means_out[0].1.to_vec2::<f32>().unwrap();
    for (r, x) in resp.iter().zip(&XS) {
        let lj = log_joint(x);
        let lse = logsumexp(&lj);
        for c in 0..3 {
            close(r[c] as f64, (lj[c] - lse).exp(), 1e-4, "responsibility");
        }
    }
    // Training maximizes log p(x): the loss is its negated mean, with gradients.
    let out = outcome(&model, &Settings::evaluation(1, false, 100));
    let grads = out.loss.backward().unwrap();
    let vars = model.store.named();
    assert!(vars.iter().all(|(_, v)| grads.get(v.as_tensor()).is_some()));
}

#[test]
fn enumerating_too_many_joint_values_is_e017() {
    let src = r#"
data x : Real[2]
latent c : Cat(64)
latent d : Cat(32)
param m : Real[64, 2]
param qc : Real[64]
param qd : Real[32]
model {
  c ~ Categorical(logits = zeros(64))
  d ~ Categorical(logits = zeros(32))
  x ~ Normal(m[c], 1)
}
guide {
  c ~ Categorical(logits = qc)
  d ~ Categorical(logits = qd)
}
"#;
    let front = vic::driver::front_end(src, &Default::default());
    let codes: Vec<String> = front
        .diagnostics
        .iter()
        .map(|d| format!("{:?}", d.code))
        .collect();
    assert!(codes.iter().any(|c| c.contains("E017")), "{codes:?}");
}

/// A `Binary[3]` latent enumerated over its 8 joint values (the guide's and the model's
/// Bernoulli have one logit per element), against the sum written out in f64.
#[test]
fn a_multi_element_binary_site_is_summed_over_its_joint_values() {
    let src = r#"
data x : Real[2]
latent b : Binary[3]
param pb : Real[3] = normal(0, 1)
param qb : Real[3] = normal(0, 1)
net mix(b: Binary[3]) -> Real[2] = linear(bias = false)
model {
  b ~ Bernoulli(logits = pb)
  x ~ Normal(mix(b), 0.7)
}
guide {
  b ~ Bernoulli(logits = qb) @enumerate
}
"#;
    let model = lower(src, 4);
    let pb = param(&model, "pb");
    let qb = param(&model, "qb");
    let (_, w) = model
        .store
        .named()
        .into_iter()
        .find(|(n, _)| n == "mix.layer0.weight")
        .unwrap();
    let w = to_f64(w.as_tensor()); // [2, 3]
    let got = bound(&model, &Settings::evaluation(1, false, 10));
    for (i, x) in XS.iter().enumerate() {
        let mut elbo = 0.0;
        for v in 0..8usize {
            let bits: Vec<f64> = (0..3).map(|k| ((v >> (2 - k)) & 1) as f64).collect();
            let lbern = |logit: f64, b: f64| {
                if b > 0.5 {
                    log_sigmoid(logit)
                } else {
                    log_sigmoid(-logit)
                }
            };
            let lq: f64 = (0..3).map(|k| lbern(qb[k], bits[k])).sum();
            let lp: f64 = (0..3).map(|k| lbern(pb[k], bits[k])).sum();
            let mean: Vec<f64> = (0..2)
                .map(|d| (0..3).map(|k| w[d * 3 + k] * bits[k]).sum())
                .collect();
            let ll: f64 = (0..2).map(|d| log_normal(x[d] as f64, mean[d], 0.7)).sum();
            elbo += lq.exp() * (lp + ll - lq);
        }
        assert!(
            (got[i] - elbo).abs() < 1e-4 * elbo.abs().max(1.0),
            "example {i}: ELBO {} vs the sum over 8 values {elbo}",
            got[i]
        );
    }
}
