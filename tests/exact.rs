//! `guide exact` on linear-Gaussian models: the exact log p(x) and posterior means
//! against an independent dense computation in f64, its gradients against finite
//! differences, a short factor-analysis run, and the metrics of `alternate` runs.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::{Device, Tensor};
use common::{lower, param_by_id, run_ok, scratch, to_f64, vic};
use std::path::{Path, PathBuf};
use vic::lower::objective::{Batch, Settings};
use vic::lower::LoweredModel;
use vic::rng::Rng;

/// Factor analysis with a learned, non-standard prior, so that every part of the affine
/// map (prior mean and scale, loadings, bias, per-dimension noise) matters.
const FA: &str = r#"
const D = 5
const L = 2
data x : Real[D]
latent z : Real[L]
param m0 : Real[L] = normal(0, 1)
param s0 : Positive[L] = uniform(0.5, 1.5)
param noise : Positive[D] = uniform(0.3, 1.2)
net load(z: Real[L]) -> Real[D] = linear()
model {
  z ~ Normal(m0, s0)
  x ~ Normal(load(z), noise)
}
guide exact
train { dataset = "unused.npz" }
"#;

fn values(model: &LoweredModel, prefix: &str, suffix: &str) -> Vec<f64> {
    let (_, v) = model
        .store
        .named()
        .into_iter()
        .find(|(n, _)| n.starts_with(prefix) && n.ends_with(suffix))
        .unwrap_or_else(|| panic!("no parameter {prefix}*{suffix}"));
    to_f64(v.as_tensor())
}

/// Dense f64 Cholesky (lower), by the textbook algorithm.
fn cholesky(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                l[i][j] = (a[i][i] - s).sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    l
}

/// Solve `Sigma y = r` with Sigma = C C^T.
fn solve(c: &[Vec<f64>], r: &[f64]) -> Vec<f64> {
    let n = r.len();
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (r[i] - (0..i).map(|k| c[i][k] * y[k]).sum::<f64>()) / c[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| c[k][i] * x[k]).sum::<f64>()) / c[i][i];
    }
    x
}

/// log N(x; mean, Sigma) and E[z | x] for the FA model, by the dense D x D covariance.
fn dense_reference(model: &LoweredModel, x: &[f64]) -> (f64, Vec<f64>) {
    let (d, l) = (5, 2);
    let w = values(model, "load.", "weight"); // [D, L], row-major
    let b = values(model, "load.", "bias");
    let m0 = param_by_id(model, 0);
    let s0 = param_by_id(model, 1);
    let noise = param_by_id(model, 2);
    let mean: Vec<f64> = (0..d)
        .map(|i| b[i] + (0..l).map(|k| w[i * l + k] * m0[k]).sum::<f64>())
        .collect();
    let sigma: Vec<Vec<f64>> = (0..d)
        .map(|i| {
            (0..d)
                .map(|j| {
                    let c: f64 = (0..l)
                        .map(|k| w[i * l + k] * s0[k] * s0[k] * w[j * l + k])
                        .sum();
                    c + if i == j { noise[i] * noise[i] } else { 0.0 }
                })
                .collect()
        })
        .collect();
    let c = cholesky(&sigma);
    let r: Vec<f64> = (0..d).map(|i| x[i] - mean[i]).collect();
    let alpha = solve(&c, &r);
    let quad: f64 = r.iter().zip(&alpha).map(|(a, b)| a * b).sum();
    let logdet: f64 = 2.0 * (0..d).map(|i| c[i][i].ln()).sum::<f64>();
    let logp = -0.5 * (d as f64 * (2.0 * std::f64::consts::PI).ln() + logdet + quad);
    // E[z | x] = m0 + S0^2 W^T Sigma^-1 (x - mean)
    let post: Vec<f64> = (0..l)
        .map(|k| m0[k] + s0[k] * s0[k] * (0..d).map(|i| w[i * l + k] * alpha[i]).sum::<f64>())
        .collect();
    (logp, post)
}

fn batch_of(rows: &[Vec<f64>]) -> Batch {
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    let t = Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap();
    Batch::new(vec![Some(t)], rows.len())
}

fn some_data() -> Vec<Vec<f64>> {
    let mut rng = Rng::seed(11);
    (0..7)
        .map(|_| {
            rng.normal_vec(5)
                .into_iter()
                .map(|v| 2.0 * v as f64 + 0.5)
                .collect()
        })
        .collect()
}

#[test]
fn exact_log_px_and_posterior_means_match_a_dense_computation() {
    let model = lower(FA, 7);
    let xs = some_data();
    let batch = batch_of(&xs);
    let mut rng = Rng::seed(1);
    let exact = model.exact_linear_gaussian(&batch, &mut rng).unwrap();
    let got: Vec<f32> = exact.log_px.to_vec1().unwrap();
    let means = model.posterior_means(&batch, &mut rng).unwrap();
    assert_eq!(means.len(), 1);
    let z: Vec<Vec<f32>> = means[0].1.to_vec2().unwrap();
    for (i, x) in xs.iter().enumerate() {
        let (want, post) = dense_reference(&model, x);
        assert!(
            (got[i] as f64 - want).abs() < 1e-4 * want.abs().max(1.0),
            "example {i}: log p(x) {} vs dense {want}",
            got[i]
        );
        for k in 0..2 {
            assert!(
                (z[i][k] as f64 - post[k]).abs() < 1e-4,
                "example {i}: E[z_{k} | x] {} vs dense {}",
                z[i][k],
                post[k]
            );
        }
    }
    // The objective is the exact log p(x), whatever the estimator asked for.
    for iwae in [false, true] {
        let out = model
            .objective(&batch, &Settings::evaluation(5, iwae, 100), &mut rng)
            .unwrap();
        let bound: Vec<f32> = out.bound.to_vec1().unwrap();
        assert_eq!(bound, got);
    }
}

#[test]
fn gradients_of_the_exact_objective_match_finite_differences() {
    let model = lower(FA, 3);
    let batch = batch_of(&some_data());
    let mut rng = Rng::seed(1);
    let settings = Settings::evaluation(1, false, 100);
    let loss = |m: &LoweredModel, rng: &mut Rng| -> f64 {
        m.objective(&batch, &settings, rng)
            .unwrap()
            .loss
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    let out = model.objective(&batch, &settings, &mut rng).unwrap();
    let grads = out.loss.backward().unwrap();
    let named = model.store.named();
    let mut checked = 0;
    for (name, var) in &named {
        let g = grads
            .get(var.as_tensor())
            .expect("every parameter gets a gradient");
        let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let shape = var.as_tensor().dims().to_vec();
        for i in 0..base.len() {
            let h = 1e-2f32;
            let mut bump = |delta: f32| {
                let mut v = base.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, shape.clone(), &Device::Cpu).unwrap())
                    .unwrap();
                loss(&model, &mut rng)
            };
            let fd = (bump(h) - bump(-h)) / (2.0 * h as f64);
            var.set(&Tensor::from_vec(base.clone(), shape.clone(), &Device::Cpu).unwrap())
                .unwrap();
            assert!(
                (fd - g[i] as f64).abs() < 2e-3 + 2e-2 * fd.abs(),
                "{name}[{i}]: gradient {} vs finite difference {fd}",
                g[i]
            );
            checked += 1;
        }
    }
    // m0 (2), s0 (2), noise (5), weight (10), bias (5).
    assert_eq!(checked, 24);
}

#[test]
fn an_amortized_guide_on_a_linear_gaussian_model_still_has_an_exact_log_px() {
    let src = FA.replace(
        "guide exact",
        "net enc(x: Real[D]) -> (loc: Real[L], scale: Positive[L]) = linear()\n\
         guide {\n  let (m, s) = enc(x)\n  z ~ Normal(m, s)\n}",
    );
    let model = lower(&src, 7);
    assert!(model.has_exact_log_px() && *model.inference() == vic::plan::Inference::Amortized);
    let xs = some_data();
    let mut rng = Rng::seed(1);
    let exact = model
        .exact_linear_gaussian(&batch_of(&xs), &mut rng)
        .unwrap();
    let got: Vec<f32> = exact.log_px.to_vec1().unwrap();
    for (i, x) in xs.iter().enumerate() {
        let (want, _) = dense_reference(&model, x);
        assert!((got[i] as f64 - want).abs() < 1e-4 * want.abs(), "{i}");
    }
    // And the ELBO lies below it.
    let out = model
        .objective(
            &batch_of(&xs),
            &Settings::evaluation(200, false, 100),
            &mut rng,
        )
        .unwrap();
    let elbo: f32 = out.bound.mean_all().unwrap().to_scalar().unwrap();
    let lp: f32 = exact.log_px.mean_all().unwrap().to_scalar().unwrap();
    assert!(elbo < lp, "ELBO {elbo} should lie below log p(x) {lp}");
    // A non-linear decoder has none.
    let mlp = src.replace(
        "net load(z: Real[L]) -> Real[D] = linear()",
        "net load(z: Real[L]) -> Real[D] = mlp(hidden = [8])",
    );
    let model = lower(&mlp, 7);
    assert!(!model.has_exact_log_px());
}

// ---------------------------------------------------------------------------------
// The command line on data/fa.npz.

fn column(csv: &str, name: &str) -> Vec<String> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let i = header
        .iter()
        .position(|h| *h == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    lines
        .map(|l| l.split(',').nth(i).unwrap().to_string())
        .collect()
}

fn spec(dir: &Path, name: &str, text: &str) -> PathBuf {
    let fa = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("fa.npz");
    let path = dir.join(name);
    std::fs::write(&path, text.replace("FA_NPZ", fa.to_str().unwrap())).unwrap();
    path
}

#[test]
fn a_short_guide_exact_run_raises_log_px_and_encodes_exact_means() {
    let dir = scratch("exact", "fa");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/factor_analysis.vi"),
    )
    .unwrap()
    .replace("\"../data/fa.npz\"", "\"FA_NPZ\"");
    let path = spec(&dir, "fa.vi", &text);
    let run = dir.join("run");
    run_ok(
        vic()
            .arg("train")
            .arg(&path)
            .arg("--out")
            .arg(&run)
            .args(["--set", "train.epochs=30"]),
    );
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let lp: Vec<f64> = column(&csv, "test_log_px")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(lp.len(), 30);
    assert!(lp[29] > lp[0] + 1.0, "log p(x) {} -> {}", lp[0], lp[29]);
    // Under `guide exact` the ELBO column is the exact log p(x) too.
    assert_eq!(column(&csv, "test_log_px"), column(&csv, "test_elbo"));

    let json = run_ok(vic().arg("eval").arg(&run).arg("--json"));
    let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(v["examples"], 500);
    assert!((v["log_px"].as_f64().unwrap() - lp[29]).abs() < 1e-3, "{v}");

    let npy = dir.join("z.npy");
    run_ok(vic().arg("encode").arg(&run).arg("-o").arg(&npy));
    let z = Tensor::read_npy(&npy).unwrap();
    assert_eq!(z.dims(), &[2500, 2]);
    let npy = dir.join("x.npy");
    run_ok(
        vic()
            .arg("sample")
            .arg(&run)
            .args(["-n", "10", "-o"])
            .arg(&npy),
    );
    assert_eq!(Tensor::read_npy(&npy).unwrap().dims(), &[10, 6]);
}

#[test]
fn alternate_runs_log_elbo_log_px_and_phase_per_step_and_plot_them() {
    let dir = scratch("exact", "em");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/factor_analysis_em.vi"),
    )
    .unwrap()
    .replace("\"../data/fa.npz\"", "\"FA_NPZ\"")
    .replace(
        "e_steps = 1000, m_steps = 1000",
        "e_steps = 40, m_steps = 40",
    );
    let path = spec(&dir, "em.vi", &text);
    let run = dir.join("run");
    run_ok(vic().arg("train").arg(&path).arg("--out").arg(&run).args([
        "--set",
        "train.epochs=4",
        "--set",
        "train.batch=100",
    ]));
    // 20 steps per epoch, a row every 40 / 20 = 2 steps: 40 rows, 20 per phase.
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let steps: Vec<u64> = column(&csv, "step")
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(steps, (1..=40).map(|k| 2 * k).collect::<Vec<u64>>());
    let phase = column(&csv, "phase");
    let want: Vec<&str> = steps
        .iter()
        .map(|s| if (s - 1) % 80 < 40 { "E" } else { "M" })
        .collect();
    assert_eq!(phase, want);
    let elbo: Vec<f64> = column(&csv, "test_elbo")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    let lp: Vec<f64> = column(&csv, "test_log_px")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    // log p(x) bounds the ELBO (up to Monte Carlo noise); it stays put while only the
    // guide moves (E phase) and rises in the M phase; the E phase closes the gap.
    for (e, l) in elbo.iter().zip(&lp) {
        assert!(*e < l + 0.1, "ELBO {e} above log p(x) {l}");
    }
    assert!(
        lp[..20].iter().all(|l| *l == lp[0]),
        "log p(x) moved in the E phase"
    );
    assert!(
        lp[39] > lp[19] + 0.1,
        "log p(x) {} -> {} in the M phase",
        lp[19],
        lp[39]
    );
    assert!(
        lp[19] - elbo[19] < lp[0] - elbo[0],
        "the E phase did not close the gap"
    );

    let png = dir.join("m.png");
    run_ok(vic().arg("plot").arg(&run).arg("-o").arg(&png));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let reader = decoder.read_info().unwrap();
    assert_eq!((reader.info().width, reader.info().height), (960, 540));
    // Without -o: metrics.png in the run directory.
    run_ok(vic().arg("plot").arg(&run));
    assert!(run.join("metrics.png").exists());
}

/// A Gaussian network: `z2`'s prior mean is affine in `z1`, and `x` reads both.
const CHAIN: &str = r#"
data x : Real[3]
latent z1 : Real[2]
latent z2 : Real[2]
param m1 : Real[2] = normal(0, 1)
param s1 : Positive[2] = uniform(0.5, 1.5)
param s2 : Positive[2] = uniform(0.3, 0.9)
param noise : Positive[3] = uniform(0.3, 1.0)
net link(z: Real[2]) -> Real[2] = linear()
net load(a: Real[2], b: Real[2]) -> Real[3] = linear()
model {
  z1 ~ Normal(m1, s1)
  z2 ~ Normal(link(z1), s2)
  x ~ Normal(load(z1, z2), noise)
}
guide exact
train { dataset = "unused.npz" }
"#;

type M = Vec<Vec<f64>>;
fn mm(a: &M, b: &M) -> M {
    (0..a.len())
        .map(|i| {
            (0..b[0].len())
                .map(|j| (0..b.len()).map(|k| a[i][k] * b[k][j]).sum())
                .collect()
        })
        .collect()
}
fn tp(a: &M) -> M {
    (0..a[0].len())
        .map(|j| (0..a.len()).map(|i| a[i][j]).collect())
        .collect()
}

#[test]
fn a_prior_mean_affine_in_another_latent_is_exact_too() {
    let model = lower(CHAIN, 4);
    let xs: Vec<Vec<f64>> = some_data().into_iter().map(|x| x[..3].to_vec()).collect();
    let flat: Vec<f32> = xs.iter().flatten().map(|&v| v as f32).collect();
    let batch = Batch::new(
        vec![Some(
            Tensor::from_vec(flat, (xs.len(), 3), &Device::Cpu).unwrap(),
        )],
        xs.len(),
    );
    let mut rng = Rng::seed(2);
    let exact = model.exact_gaussian(&batch, &mut rng).unwrap();
    let got = to_f64(&exact.log_px);
    // The joint of u = (z1, z2) by hand: z2 = A z1 + a + e2.
    let w = |name: &str, rows: usize| -> M {
        let v = values(&model, name, "");
        v.chunks(v.len() / rows).map(|r| r.to_vec()).collect()
    };
    let (a, ab) = (
        w("link.layer0.weight", 2),
        values(&model, "link.layer0.bias", ""),
    );
    let (c, cb) = (
        w("load.layer0.weight", 3),
        values(&model, "load.layer0.bias", ""),
    );
    let (m1, s1, s2, noise) = (
        param_by_id(&model, 0),
        param_by_id(&model, 1),
        param_by_id(&model, 2),
        param_by_id(&model, 3),
    );
    let s1m: M = (0..2)
        .map(|i| {
            (0..2)
                .map(|j| if i == j { s1[i] * s1[i] } else { 0.0 })
                .collect()
        })
        .collect();
    let as1 = mm(&a, &s1m);
    let as1at = mm(&as1, &tp(&a));
    let mut su: M = vec![vec![0.0; 4]; 4];
    for i in 0..2 {
        for j in 0..2 {
            su[i][j] = s1m[i][j];
            su[2 + i][j] = as1[i][j];
            su[j][2 + i] = as1[i][j];
            su[2 + i][2 + j] = as1at[i][j] + if i == j { s2[i] * s2[i] } else { 0.0 };
        }
    }
    let mu: Vec<f64> = m1
        .iter()
        .copied()
        .chain((0..2).map(|i| ab[i] + (0..2).map(|k| a[i][k] * m1[k]).sum::<f64>()))
        .collect();
    let sx: M = {
        let csc = mm(&mm(&c, &su), &tp(&c));
        (0..3)
            .map(|i| {
                (0..3)
                    .map(|j| csc[i][j] + if i == j { noise[i] * noise[i] } else { 0.0 })
                    .collect()
            })
            .collect()
    };
    let mean_x: Vec<f64> = (0..3)
        .map(|i| cb[i] + (0..4).map(|k| c[i][k] * mu[k]).sum::<f64>())
        .collect();
    let ch = cholesky(&sx);
    let means = model.posterior_means(&batch, &mut rng).unwrap();
    for (n, x) in xs.iter().enumerate() {
        let r: Vec<f64> = (0..3).map(|i| x[i] - mean_x[i]).collect();
        let alpha = solve(&ch, &r);
        let quad: f64 = r.iter().zip(&alpha).map(|(p, q)| p * q).sum();
        let logdet: f64 = 2.0 * (0..3).map(|i| ch[i][i].ln()).sum::<f64>();
        let want = -0.5 * (3.0 * (2.0 * std::f64::consts::PI).ln() + logdet + quad);
        assert!(
            (got[n] - want).abs() < 1e-4 * want.abs().max(1.0),
            "{} vs {want}",
            got[n]
        );
        // E[u | x] = mu + Su C^T Sx^-1 r.
        let scx = mm(&su, &tp(&c));
        for k in 0..4 {
            let post = mu[k] + (0..3).map(|i| scx[k][i] * alpha[i]).sum::<f64>();
            let (id, j) = if k < 2 { (0, k) } else { (1, k - 2) };
            let m = to_f64(&means.iter().find(|(l, _)| *l == id).unwrap().1);
            assert!(
                (m[n * 2 + j] - post).abs() < 1e-4,
                "E[u_{k} | x]: {} vs {post}",
                m[n * 2 + j]
            );
        }
    }
}
