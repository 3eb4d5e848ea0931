//! `partial` data and the non-enumerated discrete estimators, against values computed
//! independently in f64: the bound of labelled and hidden rows, the supervised term,
//! `@relax` (a reparameterized gradient, the temperature's effect) and `@reinforce`
//! (its gradient agrees with the exact one within Monte Carlo error; its baseline
//! learns and is checkpointed).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::{Device, Tensor};
use common::{log_softmax, param, to_f64};
use vic::ir::{DistKind, DistParam, SiteVar};
use vic::lower::dist::DistValue;
use vic::lower::objective::{Batch, Settings};
use vic::lower::LoweredModel;
use vic::rng::Rng;

/// A `partial` label `y` and a 2-d observation whose mean is a `param` row picked by it.
/// STRATEGY is replaced by each test.
const LABELLED: &str = r#"
const K = 3
data x : Real[2]
data y : Cat(K) partial
param w : Real[K] = normal(0, 1)
param means : Real[K, 2] = normal(0, 2)
param qy : Real[K] = normal(0, 1)
model {
  y ~ Categorical(logits = w)
  x ~ Normal(means[y], 1)
}
guide {
  y ~ Categorical(logits = qy) STRATEGY
}
train { supervised_weight = 0.3 }
"#;

/// A latent `c` with a non-enumerated strategy (STRATEGY).
const LATENT: &str = r#"
const K = 3
data x : Real[2]
latent c : Cat(K)
param w : Real[K] = normal(0, 1)
param means : Real[K, 2] = normal(0, 2)
param qc : Real[K] = normal(0, 1)
model {
  c ~ Categorical(logits = w)
  x ~ Normal(means[c], 1)
}
guide {
  c ~ Categorical(logits = qc) STRATEGY
}
"#;

fn lower(src: &str, strategy: &str, seed: u64) -> LoweredModel {
    common::lower(&src.replace("STRATEGY", strategy), seed)
}

fn normal_lp(x: &[f64], mean: &[f64]) -> f64 {
    x.iter()
        .zip(mean)
        .map(|(x, m)| -0.5 * (x - m).powi(2) - 0.5 * (2.0 * std::f64::consts::PI).ln())
        .sum()
}

fn one_hot(classes: &[usize], k: usize) -> Tensor {
    let mut v = vec![0f32; classes.len() * k];
    for (i, &c) in classes.iter().enumerate() {
        v[i * k + c] = 1.0;
    }
    Tensor::from_vec(v, (classes.len(), k), &Device::Cpu).unwrap()
}

/// Two examples: the first labelled (class 2), the second hidden (stored as class 0).
fn two_rows(model: &LoweredModel) -> (Batch, Vec<[f64; 2]>) {
    let xs = vec![[0.3, -1.2], [1.5, 0.4]];
    let flat: Vec<f32> = xs.iter().flatten().map(|&v| v as f32).collect();
    let x = Tensor::from_vec(flat, (2, 2), &Device::Cpu).unwrap();
    let mut data = vec![None; model.program.data.len()];
    data[0] = Some(x);
    data[1] = Some(one_hot(&[2, 0], 3));
    let mut b = Batch::new(data, 2);
    b.observed = vec![None, Some(Tensor::new(&[1f32, 0.0], &Device::Cpu).unwrap())];
    (b, xs)
}

fn named_grad(model: &LoweredModel, loss: &Tensor, name: &str) -> Option<Vec<f64>> {
    let grads = loss.backward().unwrap();
    let (_, var) = model
        .store
        .named()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap();
    grads.get(var.as_tensor()).map(to_f64)
}

#[test]
fn labelled_rows_use_their_value_and_hidden_rows_are_summed() {
    let model = lower(LABELLED, "", 3);
    let (batch, xs) = two_rows(&model);
    let (lp, means, lq) = (
        log_softmax(&param(&model, "w")),
        param(&model, "means"),
        log_softmax(&param(&model, "qy")),
    );
    let mean = |c: usize| [means[2 * c], means[2 * c + 1]];
    let labelled = lp[2] + normal_lp(&xs[0], &mean(2));
    let hidden: f64 = (0..3)
        .map(|c| lq[c].exp() * (lp[c] + normal_lp(&xs[1], &mean(c)) - lq[c]))
        .sum();
    let s = Settings::evaluation(1, false, 2);
    let out = model.objective(&batch, &s, &mut Rng::seed(0)).unwrap();
    let bound: Vec<f32> = out.bound.to_vec1().unwrap();
    assert!(
        (bound[0] as f64 - labelled).abs() < 1e-4,
        "{bound:?} vs {labelled}"
    );
    assert!(
        (bound[1] as f64 - hidden).abs() < 1e-4,
        "{bound:?} vs {hidden}"
    );

    // The supervised term: alpha * (-log q(2)), the one labelled example's.
    let term = |out: &vic::lower::objective::Outcome, name: &str| {
        out.terms
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.value.to_scalar::<f32>().unwrap() as f64)
    };
    assert!((term(&out, "-log q(y) labelled").unwrap() + lq[2]).abs() < 1e-5);
    let train = Settings { train: true, ..s };
    let out = model.objective(&batch, &train, &mut Rng::seed(0)).unwrap();
    let loss = out.loss.to_scalar::<f32>().unwrap() as f64;
    let want = -(labelled + hidden) / 2.0 + 0.3 * (-lq[2]);
    assert!((loss - want).abs() < 1e-4, "{loss} vs {want}");

    // The labelled row's bound does not depend on how hidden rows are drawn.
    for strategy in ["@relax(temperature = 0.5)", "@reinforce"] {
        let m = lower(LABELLED, strategy, 3);
        let (batch, _) = two_rows(&m);
        let out = m.objective(&batch, &s, &mut Rng::seed(1)).unwrap();
        let b0 = out.bound.to_vec1::<f32>().unwrap()[0] as f64;
        assert!(
            (b0 - labelled).abs() < 1e-4,
            "{strategy}: {b0} vs {labelled}"
        );
    }

    // Every row observed: nothing is enumerated and every bound is log p(x, y).
    let mut all = two_rows(&model).0;
    all.observed = Vec::new();
    let out = model.objective(&all, &s, &mut Rng::seed(0)).unwrap();
    let b1 = out.bound.to_vec1::<f32>().unwrap()[1] as f64;
    assert!((b1 - (lp[0] + normal_lp(&xs[1], &mean(0)))).abs() < 1e-4);
}

#[test]
fn accuracy_reads_q_without_the_labels() {
    let model = lower(LABELLED, "", 3);
    let (batch, _) = two_rows(&model);
    let probs = model.partial_probs(&batch, &mut Rng::seed(0)).unwrap();
    assert_eq!(probs.len(), 1);
    let q: Vec<Vec<f32>> = probs[0].1.to_vec2().unwrap();
    let lq = log_softmax(&param(&model, "qy"));
    for row in &q {
        for (a, b) in row.iter().zip(&lq) {
            assert!((*a as f64 - b.exp()).abs() < 1e-6);
        }
    }
}

#[test]
fn relax_is_reparameterized_and_sharpens_as_the_temperature_falls() {
    // The gradient of log p(x | c) reaches the guide's logits through the relaxed draw;
    // a @reinforce draw is detached, so the same term gives none.
    let xs = Tensor::from_vec([0.5f32, -0.5].repeat(64), (64, 2), &Device::Cpu).unwrap();
    let batch = |m: &LoweredModel| {
        let mut data = vec![None; m.program.data.len()];
        data[0] = Some(xs.clone());
        Batch::new(data, 64)
    };
    let s = Settings::evaluation(1, false, 64);
    let relaxed = lower(LATENT, "@relax(temperature = 0.5)", 5);
    let out = relaxed
        .objective(&batch(&relaxed), &s, &mut Rng::seed(2))
        .unwrap();
    let g = named_grad(&relaxed, &out.loglik.mean_all().unwrap(), "qc").unwrap();
    assert!(
        g.iter().all(|v| v.is_finite()) && g.iter().any(|v| v.abs() > 1e-6),
        "{g:?}"
    );
    let reinforced = lower(LATENT, "@reinforce", 5);
    let out = reinforced
        .objective(&batch(&reinforced), &s, &mut Rng::seed(2))
        .unwrap();
    let g = named_grad(&reinforced, &out.loglik.mean_all().unwrap(), "qc");
    assert!(
        g.as_ref().is_none_or(|g| g.iter().all(|v| *v == 0.0)),
        "{g:?}"
    );

    // Temperature: the mean largest coordinate of a relaxed one-hot.
    let logits = Tensor::new(&[[0.2f32, -0.3, 0.1]], &Device::Cpu)
        .unwrap()
        .broadcast_as((4000, 3))
        .unwrap()
        .contiguous()
        .unwrap();
    let q = DistValue::new(
        DistKind::Categorical,
        vec![(DistParam::Logits, logits)],
        None,
        &[],
    )
    .unwrap();
    let sharpness = |t: f64| {
        let v = q.relaxed_sample(t, &mut Rng::seed(9)).unwrap();
        let sums: Vec<f32> = v.sum(1).unwrap().to_vec1().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-4));
        v.max(1)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let (cold, warm) = (sharpness(0.05), sharpness(5.0));
    assert!(cold > 0.97, "{cold}");
    assert!(warm < 0.45, "{warm}");
}

/// The ELBO's exact gradient in the guide's logits (the enumerated objective) against
/// the @reinforce estimate, averaged over independent batches.
#[test]
fn reinforce_agrees_with_the_exact_gradient_within_monte_carlo_error() {
    let rows = 2000;
    let xs = Tensor::from_vec([0.5f32, -0.5].repeat(rows), (rows, 2), &Device::Cpu).unwrap();
    let batch = |m: &LoweredModel| {
        let mut data = vec![None; m.program.data.len()];
        data[0] = Some(xs.clone());
        Batch::new(data, rows)
    };
    let s = Settings {
        train: true,
        ..Settings::evaluation(1, false, rows)
    };
    let exact_model = lower(LATENT, "@enumerate", 7);
    let out = exact_model
        .objective(&batch(&exact_model), &s, &mut Rng::seed(0))
        .unwrap();
    let exact = named_grad(&exact_model, &out.loss, "qc").unwrap();

    let model = lower(LATENT, "@reinforce", 7);
    let mut rng = Rng::seed(1);
    // Warm the baseline up (it only lowers the variance).
    for _ in 0..60 {
        let out = model.objective(&batch(&model), &s, &mut rng).unwrap();
        model.after_step(&out.estimator_targets).unwrap();
    }
    let (_, b) = model
        .store
        .named()
        .into_iter()
        .find(|(n, _)| n == "@baseline.c")
        .expect("the baseline is a checkpointed tensor");
    let out = model.objective(&batch(&model), &s, &mut rng).unwrap();
    let target = out.estimator_targets[0].1;
    let b = b.as_tensor().to_scalar::<f32>().unwrap() as f64;
    assert!(
        (b - target).abs() < 0.05 * target.abs().max(1.0),
        "baseline {b} vs mean objective {target}"
    );
    assert_eq!(out.estimator_targets[0].0, SiteVar::Latent(0));

    let runs = 12;
    let estimates: Vec<Vec<f64>> = (0..runs)
        .map(|_| {
            let out = model.objective(&batch(&model), &s, &mut rng).unwrap();
            named_grad(&model, &out.loss, "qc").unwrap()
        })
        .collect();
    for k in 0..3 {
        let v: Vec<f64> = estimates.iter().map(|e| e[k]).collect();
        let mean = v.iter().sum::<f64>() / runs as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (runs - 1) as f64).sqrt();
        let se = sd / (runs as f64).sqrt();
        assert!(
            (mean - exact[k]).abs() < 4.0 * se + 1e-3,
            "logit {k}: reinforce {mean} ± {se}, exact {}",
            exact[k]
        );
        // The estimate is informative, not noise around zero.
        assert!(se < 0.5 * exact.iter().map(|g| g.abs()).fold(0.0, f64::max) + 1e-3);
    }
}

/// A Gamma guide site has no reparameterized sampler: with @reinforce its parameters
/// still get a finite gradient, from the surrogate alone.
#[test]
fn reinforce_trains_a_gamma_guide_site() {
    let src = r#"
data x : Real[2]
latent r : Positive
param qa : Positive = 2.0
param qb : Positive = 1.0
model {
  r ~ Gamma(2, 1)
  x ~ Normal(0, r)
}
guide {
  r ~ Gamma(qa, qb) @reinforce
}
"#;
    let model = lower(src, "", 1);
    let xs = Tensor::from_vec([0.5f32, -2.0].repeat(256), (256, 2), &Device::Cpu).unwrap();
    let mut data = vec![None; model.program.data.len()];
    data[0] = Some(xs);
    let batch = Batch::new(data, 256);
    let s = Settings {
        train: true,
        ..Settings::evaluation(1, false, 256)
    };
    let out = model.objective(&batch, &s, &mut Rng::seed(4)).unwrap();
    // The loss reads as the objective: the surrogate adds nothing to its value.
    let loss = out.loss.to_scalar::<f32>().unwrap();
    let bound = out.bound.mean_all().unwrap().to_scalar::<f32>().unwrap();
    assert!((loss + bound).abs() < 1e-4, "{loss} vs {bound}");
    for name in ["qa", "qb"] {
        let g = named_grad(&model, &out.loss, name).unwrap();
        assert!(
            g.iter().all(|v| v.is_finite() && *v != 0.0),
            "{name}: {g:?}"
        );
    }
}
