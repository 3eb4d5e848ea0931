//! Semi-amortized refinement against truth: the gradient SA-VAE trains the encoder and the
//! decoder with (reverse-mode through the refinement steps, Hessian-vector products by
//! finite differences) against a finite-difference derivative of the whole unrolled
//! objective; the refinement raising every example's bound; `vic eval --refine K`.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_range_loop
)]

mod common;

use candle_core::{Device, Tensor};
use common::{json_of, lower, run_ok, scratch, to_f64, vic};
use vic::lower::objective::{Batch, Settings};
use vic::lower::LoweredModel;
use vic::rng::Rng;

const TINY: &str = r#"
data x : Real[4]
latent z : Real[2]
param noise : Positive[4] = 0.7
net enc(x: Real[4]) -> (loc: Real[2], scale: Positive[2]) = mlp(hidden = [5], act = tanh)
net dec(z: Real[2]) -> Real[4] = mlp(hidden = [5], act = tanh)
model {
  z ~ Normal(0, 1)
  x ~ Normal(dec(z), noise)
}
guide {
  let (m, s) = enc(x)
  z ~ Normal(m, s) @refine(steps = 3, lr = 0.5, through = THROUGH)
}
train { dataset = "unused.npz" }
"#;

fn batch() -> Batch {
    let v: Vec<f32> = Rng::seed(2).normal_vec(6 * 4);
    Batch::new(
        vec![Some(Tensor::from_vec(v, (6, 4), &Device::Cpu).unwrap())],
        6,
    )
}

fn settings() -> Settings {
    Settings {
        samples: 1,
        iwae: false,
        train: true,
        kl_weight: 1.0,
        free_bits: 0.0,
        dataset_size: 100,
    }
}

/// The loss with the same noise every time.
fn loss(model: &LoweredModel, b: &Batch) -> f64 {
    model
        .objective(b, &settings(), &mut Rng::seed(7))
        .unwrap()
        .loss
        .to_scalar::<f32>()
        .unwrap() as f64
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn the_meta_gradient_through_the_refinement_matches_finite_differences() {
    meta_gradient_matches_finite_differences(&TINY.replace("THROUGH", "true"), &["enc.", "dec."]);
}

/// A model without learned parameters of its own: the encoder's meta-gradient alone.
#[test]
fn the_meta_gradient_matches_finite_differences_without_model_parameters() {
    let src = r#"
data x : Real[4]
latent z : Real[4]
net enc(x: Real[4]) -> (loc: Real[4], scale: Positive[4]) = mlp(hidden = [5], act = tanh)
model {
  z ~ Normal(0, 1)
  x ~ Normal(z, 0.7)
}
guide {
  let (m, s) = enc(x)
  z ~ Normal(m, s) @refine(steps = 3, lr = 0.5, through = true)
}
train { dataset = "unused.npz" }
"#;
    meta_gradient_matches_finite_differences(src, &["enc."]);
}

/// The gradient of the refined objective in each network's parameters (`nets`, name
/// prefixes) against central finite differences of the whole unrolled objective, with the
/// same noise at every evaluation: direction and norm.
fn meta_gradient_matches_finite_differences(src: &str, nets: &[&str]) {
    let model = lower(src, 3);
    let b = batch();
    let out = model.objective(&b, &settings(), &mut Rng::seed(7)).unwrap();
    let grads = out.loss.backward().unwrap();
    for net in nets {
        let (mut analytic, mut numeric) = (Vec::new(), Vec::new());
        for (name, var) in model.store.named() {
            if !name.starts_with(net) {
                continue;
            }
            let g = to_f64(grads.get(var.as_tensor()).expect("a gradient"));
            let base: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let shape = var.as_tensor().dims().to_vec();
            for i in 0..base.len() {
                let h = 3e-3f32;
                let at = |d: f32| {
                    let mut v = base.clone();
                    v[i] += d;
                    var.set(&Tensor::from_vec(v, shape.clone(), &Device::Cpu).unwrap())
                        .unwrap();
                    loss(&model, &b)
                };
                let fd = (at(h) - at(-h)) / (2.0 * h as f64);
                var.set(&Tensor::from_vec(base.clone(), shape.clone(), &Device::Cpu).unwrap())
                    .unwrap();
                analytic.push(g[i]);
                numeric.push(fd);
            }
        }
        let c = cosine(&analytic, &numeric);
        // The cosine misses an error of scale: the norms too.
        let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let ratio = n(&analytic) / n(&numeric);
        println!(
            "{net}: cosine {c:.5}, norm ratio {ratio:.4} over {} parameters",
            analytic.len()
        );
        assert!(
            c > 0.99,
            "{net} meta-gradient: cosine {c} with finite differences"
        );
        assert!(
            (ratio - 1.0).abs() < 0.02,
            "{net} meta-gradient: norm {ratio} times the finite differences'"
        );
    }
}

#[test]
fn without_gradients_through_the_steps_the_encoder_learns_the_bound_at_its_own_output() {
    // through = false: the encoder's gradient is that of the loss at λ0 (no refinement),
    // the decoder's that of the loss at λ_K.
    let refined = lower(&TINY.replace("THROUGH", "false"), 3);
    let plain = lower(
        &TINY.replace(" @refine(steps = 3, lr = 0.5, through = THROUGH)", ""),
        3,
    );
    let b = batch();
    // Expected gradients: the two draw their noise in different orders, so average over
    // many draws.
    let grad_of = |m: &LoweredModel, prefix: &str| -> Vec<f64> {
        let mut acc: Vec<f64> = Vec::new();
        for seed in 0..300 {
            let out = m.objective(&b, &settings(), &mut Rng::seed(seed)).unwrap();
            let g = out.loss.backward().unwrap();
            let v: Vec<f64> = m
                .store
                .named()
                .into_iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .flat_map(|(_, v)| to_f64(g.get(v.as_tensor()).unwrap()))
                .collect();
            if acc.is_empty() {
                acc = v;
            } else {
                acc.iter_mut().zip(v).for_each(|(a, b)| *a += b);
            }
        }
        acc
    };
    let c = cosine(&grad_of(&refined, "enc."), &grad_of(&plain, "enc."));
    assert!(
        c > 0.99,
        "the encoder's gradient: cosine {c} with the plain VAE's"
    );
    // The decoder's differs: it sees the refined posterior.
    let d = cosine(&grad_of(&refined, "dec."), &grad_of(&plain, "dec."));
    assert!(
        d < 0.9999,
        "the decoder's gradient should see the refinement: cosine {d}"
    );
}

#[test]
fn refinement_raises_the_bound_of_almost_every_example_and_eval_reports_the_gap() {
    let dir = scratch("refine", "gap");
    let src = r#"
data x : Binary[64]
latent z : Real[4]
net enc(x: Binary[64]) -> (loc: Real[4], scale: Positive[4]) = mlp(hidden = [32], act = relu)
net dec(z: Real[4]) -> Real[64] = mlp(hidden = [32], act = relu)
model {
  z ~ Normal(0, 1)
  x ~ Bernoulli(logits = dec(z))
}
guide {
  let (m, s) = enc(x)
  z ~ Normal(m, s)
}
train { dataset = "digits"; epochs = 3; batch = 64 }
"#;
    let spec = dir.join("vae.vi");
    std::fs::write(&spec, src).unwrap();
    let run = dir.join("run");
    run_ok(vic().arg("train").arg(&spec).arg("--out").arg(&run));
    let v = json_of(
        vic()
            .args(["eval", "--samples", "2", "--refine", "20", "--json"])
            .arg(&run),
    );
    let r = &v["refinement"];
    let (b0, bk) = (
        r["elbo_start"].as_f64().unwrap(),
        r["elbo_refined"].as_f64().unwrap(),
    );
    assert!(bk > b0, "{r}");
    assert!((r["gap"].as_f64().unwrap() - (bk - b0)).abs() < 1e-9);
    let per: Vec<f64> = r["per_example_gap"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_f64().unwrap())
        .collect();
    assert_eq!(per.len(), v["examples"].as_u64().unwrap() as usize);
    // Each bound is a 64-draw average (the same draws before and after): a gap below 0 is
    // that average's noise, a few hundredths of a nat at most.
    let raised = per.iter().filter(|g| **g >= 0.0).count() as f64 / per.len() as f64;
    assert!(
        raised >= 0.97,
        "refinement raised {raised} of the examples' bounds"
    );
    let worst = per.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(
        worst > -0.05,
        "refinement lowered an example's bound by {worst}"
    );
    let text = run_ok(
        vic()
            .args(["eval", "--samples", "2", "--refine", "20"])
            .arg(&run),
    );
    assert!(text.contains("amortization gap"), "{text}");
}

/// A `@random_function` guide trains through the CLI; `vic eval` reports the GP's
/// predictive variance per test example and refines it like any Normal guide, its
/// per-dataset KL shared by the training examples (the bound at the start of the
/// refinement is the evaluation's ELBO, not thousands of nats below it); `vic encode`
/// writes one posterior mean per example.
#[test]
fn a_random_function_guide_trains_and_eval_reports_its_variance_and_gap() {
    let dir = scratch("refine", "random-function");
    let src = r#"
data x : Binary[64]
latent z : Real[4]
net enc(x: Binary[64]) -> (loc: Real[4], scale: Positive[4]) = mlp(hidden = [32], act = relu)
net dec(z: Real[4]) -> Real[64] = mlp(hidden = [32], act = relu)
model {
  z ~ Normal(0, 1)
  x ~ Bernoulli(logits = dec(z))
}
guide {
  let (m, s) = enc(x)
  z ~ Normal(m, s) @random_function(inducing = 16)
}
train { dataset = "digits"; epochs = 3; batch = 64 }
"#;
    let spec = dir.join("rf.vi");
    std::fs::write(&spec, src).unwrap();
    let run = dir.join("run");
    let text = run_ok(vic().arg("train").arg(&spec).arg("--out").arg(&run));
    assert!(text.contains("test ELBO"), "{text}");
    let header = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(header.contains("KL(GP of z)"), "{header}");
    let out = vic()
        .args([
            "eval",
            "--samples",
            "2",
            "--refine",
            "5",
            "--examples",
            "60",
            "--json",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let var = v["random_function"]["per_example_variance"]
        .as_array()
        .unwrap();
    assert_eq!(var.len(), 60);
    assert!(var.iter().all(|x| x.as_f64().unwrap() > 0.0));
    let elbo = v["elbo"].as_f64().unwrap();
    let start = v["refinement"]["elbo_start"].as_f64().unwrap();
    assert!(
        (elbo - start).abs() < 2.0,
        "ELBO {elbo}, refinement start {start}"
    );
    let means = dir.join("z.npy");
    run_ok(vic().arg("encode").arg(&run).arg("-o").arg(&means));
    assert!(std::fs::metadata(&means).unwrap().len() > 0);
}
