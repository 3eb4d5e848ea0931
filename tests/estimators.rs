//! The estimator contract: every guide site is drawn by the estimator its plan names,
//! and the objective is one call that can substitute a site's distribution parameters
//! (`objective_with`), checked against closed forms.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::{Device, Tensor};
use common::{lower, param, to_f64};
use vic::ir::{DistParam, SiteVar};
use vic::lower::eval::Overrides;
use vic::lower::objective::{Batch, Settings};
use vic::lower::LoweredModel;
use vic::rng::Rng;

/// One-factor analysis with an amortized guide and Monte Carlo KL: with the guide set to
/// the exact posterior, every sample's `log p(x, z) - log q(z)` is exactly `log p(x)`.
const FA1: &str = r#"
const D = 4
data x : Real[D]
latent z : Real
param m0 : Real = 0.3
param s0 : Positive = 1.4
param noise : Positive[D] = uniform(0.4, 1.1)
net load(z: Real) -> Real[D] = linear()
net enc(x: Real[D]) -> (loc: Real, scale: Positive) = linear()
model {
  z ~ Normal(m0, s0)
  x ~ Normal(load(z), noise)
}
guide {
  let (m, s) = enc(x)
  z ~ Normal(m, s)
}
train { dataset = "unused.npz"; kl = mc }
"#;

fn weights(model: &LoweredModel, name: &str) -> Vec<f64> {
    let (_, v) = model
        .store
        .named()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no parameter {name}"));
    to_f64(v.as_tensor())
}

/// The exact posterior `N(mu, 1/P)` of `z` and `log p(x)` for one example, in f64 from the
/// model's parameters: `P = 1/s0^2 + Σ w_i^2/σ_i^2`; `log p(x)` by the matrix determinant
/// lemma and Sherman-Morrison on `Σ = s0^2 w w^T + diag(σ^2)`.
fn exact_posterior(model: &LoweredModel, x: &[f64]) -> (f64, f64, f64) {
    let w = weights(model, "load.layer0.weight");
    let b = weights(model, "load.layer0.bias");
    let (m0, s0) = (param(model, "m0")[0], param(model, "s0")[0]);
    let noise = param(model, "noise");
    let v: Vec<f64> = noise.iter().map(|s| s * s).collect();
    let r: Vec<f64> = (0..x.len()).map(|i| x[i] - b[i] - w[i] * m0).collect();
    let wtw: f64 = (0..x.len()).map(|i| w[i] * w[i] / v[i]).sum();
    let wtr: f64 = (0..x.len()).map(|i| w[i] * r[i] / v[i]).sum();
    let rtr: f64 = (0..x.len()).map(|i| r[i] * r[i] / v[i]).sum();
    let prec = 1.0 / (s0 * s0) + wtw;
    let mean = m0 + wtr / prec;
    let c = 1.0 + s0 * s0 * wtw;
    let logdet: f64 = v.iter().map(|a| a.ln()).sum::<f64>() + c.ln();
    let quad = rtr - s0 * s0 * wtr * wtr / c;
    let d = x.len() as f64;
    let log_px = -0.5 * (d * (2.0 * std::f64::consts::PI).ln() + logdet + quad);
    (mean, (1.0 / prec).sqrt(), log_px)
}

fn data(n: usize) -> Vec<Vec<f64>> {
    let mut rng = Rng::seed(5);
    (0..n)
        .map(|_| {
            rng.normal_vec(4)
                .into_iter()
                .map(|v| 1.5 * v as f64)
                .collect()
        })
        .collect()
}

fn batch_of(rows: &[Vec<f64>]) -> Batch {
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    let t = Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap();
    Batch::new(vec![Some(t)], rows.len())
}

#[test]
fn the_bound_with_the_exact_posterior_substituted_is_log_px_for_every_sample() {
    let model = lower(FA1, 2);
    let xs = data(6);
    let batch = batch_of(&xs);
    let exact: Vec<(f64, f64, f64)> = xs.iter().map(|x| exact_posterior(&model, x)).collect();
    let col = |f: fn(&(f64, f64, f64)) -> f64| {
        let v: Vec<f32> = exact.iter().map(|e| f(e) as f32).collect();
        Tensor::from_vec(v, xs.len(), &Device::Cpu).unwrap()
    };
    let mut over = Overrides::default();
    over.set(
        SiteVar::Latent(0),
        None,
        vec![
            (DistParam::Loc, col(|e| e.0)),
            (DistParam::Scale, col(|e| e.1)),
        ],
    );
    let mut rng = Rng::seed(9);
    // 50 samples per example, each its own single-sample bound.
    for iwae in [false, true] {
        let s = Settings::evaluation(50, iwae, 100);
        let out = model.objective_with(&batch, &s, &over, &mut rng).unwrap();
        let got = to_f64(&out.bound);
        for (i, e) in exact.iter().enumerate() {
            assert!(
                (got[i] - e.2).abs() < 2e-4 * e.2.abs().max(1.0),
                "example {i} (iwae {iwae}): bound {} vs log p(x) {}",
                got[i],
                e.2
            );
        }
    }
    // The encoder's own q is not the posterior: its ELBO is lower, and the substitution
    // is what made the difference.
    let s = Settings::evaluation(2000, false, 100);
    let own = to_f64(&model.objective(&batch, &s, &mut rng).unwrap().bound);
    for (i, e) in exact.iter().enumerate() {
        assert!(own[i] < e.2 - 1e-3, "example {i}: {} vs {}", own[i], e.2);
    }
}

#[test]
fn a_substituted_site_gets_the_gradient_of_the_bound() {
    // d ELBO / d mu at a Normal(mu, s) guide, with the analytic KL of the default plan:
    // E_q log p(x | z) is quadratic in z, so with s fixed the derivative in mu is
    // -P (mu - mu*) in closed form (P the posterior precision, mu* its mean).
    let model = lower(&FA1.replace("kl = mc", "kl = analytic"), 4);
    let xs = data(3);
    let batch = batch_of(&xs);
    let mu = candle_core::Var::from_tensor(
        &Tensor::from_vec(vec![0.2f32, -0.7, 1.1], 3, &Device::Cpu).unwrap(),
    )
    .unwrap();
    let scale = Tensor::from_vec(vec![0.5f32; 3], 3, &Device::Cpu).unwrap();
    let mut over = Overrides::default();
    over.set(
        SiteVar::Latent(0),
        None,
        vec![
            (DistParam::Loc, mu.as_tensor().clone()),
            (DistParam::Scale, scale),
        ],
    );
    let mut rng = Rng::seed(3);
    let s = Settings::evaluation(4000, false, 100);
    let out = model.objective_with(&batch, &s, &over, &mut rng).unwrap();
    let grads = out.bound.sum_all().unwrap().backward().unwrap();
    let g = to_f64(grads.get(mu.as_tensor()).unwrap());
    for (i, x) in xs.iter().enumerate() {
        let (mean, sd, _) = exact_posterior(&model, x);
        let m = to_f64(mu.as_tensor())[i];
        let want = -(m - mean) / (sd * sd);
        // The reconstruction term's gradient is a Monte Carlo average (4000 samples).
        assert!(
            (g[i] - want).abs() < 0.05 * want.abs().max(1.0),
            "example {i}: d bound / d loc {} vs {want}",
            g[i]
        );
    }
}

#[test]
fn every_guide_site_is_drawn_by_the_estimator_its_plan_names() {
    let src = r#"
const D = 6
data x : Binary[D]
data y : Cat(3) partial
latent c : Cat(4)
latent b : Cat(2)
latent g : Positive
latent z : Real[2]
net fc(x: Binary[D]) -> Real[4] = linear()
net fb(x: Binary[D]) -> Real[2] = linear()
net fy(x: Binary[D]) -> Real[3] = linear()
net fz(x: Binary[D]) -> (loc: Real[2], scale: Positive[2]) = linear()
net dec(z: Real[2], c: Cat(4), b: Cat(2), y: Cat(3)) -> Real[D] = linear()
model {
  c ~ Categorical(logits = zeros(4))
  b ~ Categorical(logits = zeros(2))
  y ~ Categorical(logits = zeros(3))
  g ~ Gamma(2, 2)
  z ~ Normal(0, g)
  x ~ Bernoulli(logits = dec(z, c, b, y))
}
guide {
  c ~ Categorical(logits = fc(x))
  b ~ Categorical(logits = fb(x)) @relax(temperature = 0.5)
  y ~ Categorical(logits = fy(x)) @reinforce
  g ~ Gamma(2, 2) @reinforce
  let (m, s) = fz(x)
  z ~ Normal(m, s)
}
train { dataset = "unused.npz"; labels = 1 }
"#;
    let model = lower(src, 1);
    let names: Vec<(String, &str, &str)> = model
        .plan
        .sites
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.estimator.name(),
                model.estimator(s.var).unwrap().strategy(),
            )
        })
        .collect();
    for (name, planned, built) in &names {
        assert_eq!(planned, built, "{name}");
    }
    let planned: Vec<&str> = names.iter().map(|n| n.1).collect();
    assert_eq!(
        planned,
        [
            "enumerate",
            "relax",
            "reinforce",
            "reinforce",
            "reparameterized"
        ]
    );
    // The two @reinforce sites own their baselines; nothing else owns parameters.
    assert_eq!(model.estimator_parameters(), ["@baseline.y", "@baseline.g"]);
}

#[test]
fn the_guide_group_of_alternate_claims_its_own_names_only() {
    // A guide param `s` must not claim the model's `scales` or network `summary`.
    let src = r#"
data x : Real[3]
latent z : Real
param s : Positive = 1.0
param scales : Positive[3] = 1.0
net summary(z: Real) -> Real[3] = linear()
net enc(x: Real[3]) -> Real = linear()
model {
  z ~ Normal(0, 1)
  x ~ Normal(summary(z), scales)
}
guide {
  z ~ Normal(enc(x), s)
}
train { dataset = "unused.npz"; schedule = alternate(e_steps = 1, m_steps = 1) }
"#;
    let model = lower(src, 0);
    let prefixes = model.guide_parameter_prefixes();
    let guide: Vec<String> = model
        .store
        .named()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| LoweredModel::is_guide_parameter(&prefixes, n))
        .collect();
    let mut guide = guide;
    guide.sort();
    assert_eq!(guide, ["enc.layer0.bias", "enc.layer0.weight", "s"]);
}
