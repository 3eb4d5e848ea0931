//! Global latents against truth: Bayesian linear regression (specs/bayes_regression.vi),
//! trained by the generic loop, where the mean-field guide's optimum is known in closed
//! form: its means are the exact posterior mean, its scales diag(posterior precision)^-1/2.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_range_loop
)]

mod common;

use candle_core::Device;
use std::collections::HashMap;
use std::path::Path;
use vic::train::{self, Observer, RunStore, TrainOptions};

/// A run directory in memory.
#[derive(Default)]
struct Memory {
    files: HashMap<String, Vec<u8>>,
    checkpoint: Option<HashMap<String, Vec<u8>>>,
}

impl RunStore for Memory {
    fn save_checkpoint(&mut self, files: Vec<(String, Vec<u8>)>) -> Result<(), String> {
        self.checkpoint = Some(files.into_iter().collect());
        Ok(())
    }
    fn load_checkpoint(&self) -> Result<Option<HashMap<String, Vec<u8>>>, String> {
        Ok(self.checkpoint.clone())
    }
    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        self.files.insert(name.into(), bytes.to_vec());
        Ok(())
    }
}

struct Quiet;
impl Observer for Quiet {}

/// Solve `a x = b` (a symmetric positive definite) by Gauss-Jordan elimination.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let p = a[c][c];
        for j in 0..n {
            a[c][j] /= p;
        }
        b[c] /= p;
        for i in 0..n {
            if i != c {
                let f = a[i][c];
                for j in 0..n {
                    a[i][j] -= f * a[c][j];
                }
                b[i] -= f * b[c];
            }
        }
    }
    b
}

#[test]
fn the_mean_field_guide_of_a_global_weight_finds_the_exact_posterior() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(root.join("specs/bayes_regression.vi")).unwrap();
    let front = vic::driver::front_end(&src, &Default::default());
    let mut program = front.program.unwrap();
    // Full batches (one step per epoch), as many steps as the spec takes.
    program.train.batch = 400;
    program.train.epochs = 12000;
    let env = vic::data::DataEnv {
        spec_dir: root.join("specs"),
        vic_data: None,
    };
    let data =
        vic::data::load(&program, &program.train.dataset, &env, &vic::io::RealFs, 0).unwrap();
    let opts = TrainOptions {
        device: Device::Cpu,
        resume: false,
        clock: Box::new(|| 0.0),
        hold_after_epoch: None,
    };
    let trained = train::train(program, &data, opts, &mut Memory::default(), &mut Quiet).unwrap();
    let model = &trained.model;
    let qm = common::param(model, "qm");
    let qs = common::param(model, "qs");

    // The exact posterior of w ~ N(0, I), y ~ N(w.x, 0.5^2): precision I + X^T X / 0.25.
    let x = &data.train.var(0).unwrap().data;
    let y = &data.train.var(1).unwrap().data;
    let (n, d) = (data.train.n, 5);
    let mut prec = vec![vec![0.0; d]; d];
    let mut xty = vec![0.0; d];
    for i in 0..n {
        for a in 0..d {
            xty[a] += x[i * d + a] as f64 * y[i] as f64 / 0.25;
            for b in 0..d {
                prec[a][b] += x[i * d + a] as f64 * x[i * d + b] as f64 / 0.25;
            }
        }
    }
    for a in 0..d {
        prec[a][a] += 1.0;
    }
    let mean = solve(prec.clone(), xty);
    let (mut worst_mean, mut worst_scale) = (0f64, 0f64);
    for a in 0..d {
        let sd = 1.0 / prec[a][a].sqrt();
        worst_mean = worst_mean.max((qm[a] - mean[a]).abs() / sd);
        worst_scale = worst_scale.max((qs[a] / sd - 1.0).abs());
    }
    println!(
        "mean-field guide against the exact posterior: means within {worst_mean:.3} posterior sd, scales within {:.2}% of diag(precision)^-1/2",
        100.0 * worst_scale
    );
    for a in 0..d {
        let sd = 1.0 / prec[a][a].sqrt();
        assert!(
            (qm[a] - mean[a]).abs() < 0.25 * sd,
            "w_{a}: guide mean {} vs exact {} (posterior sd {sd})",
            qm[a],
            mean[a]
        );
        assert!(
            (qs[a] / sd - 1.0).abs() < 0.05,
            "w_{a}: guide scale {} vs diag(precision)^-1/2 {sd}",
            qs[a]
        );
    }
    // The global KL is counted once per dataset: the final bound's per-example KL term is
    // KL / n.
    let last = trained.metrics.last().unwrap();
    let kl = last.terms.iter().find(|(n, _)| n == "KL(w)").unwrap().1;
    let exact_kl: f64 = (0..d)
        .map(|a| 0.5 * (qs[a] * qs[a] + qm[a] * qm[a] - 1.0) - qs[a].ln())
        .sum::<f64>()
        / n as f64;
    assert!(
        (kl - exact_kl).abs() < 1e-4 * exact_kl.max(1e-3),
        "KL(w) term {kl} vs {exact_kl}"
    );
}
