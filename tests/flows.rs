//! Inverse autoregressive flows against truth: zero steps are the diagonal guide exactly;
//! a step's log-determinant is that of its finite-difference Jacobian; MADE is
//! autoregressive (by autodiff); and a linear one-step IAF fitted to a correlated 2-D
//! Gaussian posterior (correlation 0.9) closes the KL that the diagonal guide leaves at
//! -1/2 log(1 - 0.9^2) = 0.830 nats.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_range_loop
)]

mod common;

use candle_core::{Device, Tensor, Var};
use common::{lower, run_ok, scratch, to_f64, vic};
use vic::lower::nets::{self, NetCtx};
use vic::lower::objective::{Batch, Settings};
use vic::lower::params::ParamStore;
use vic::rng::Rng;

/// A small IAF VAE on 16 binary pixels, with `STEPS` flow steps.
const IAF: &str = r#"
data x : Binary[16]
latent z : Real[3]
net enc(x: Binary[16]) -> (loc: Real[3], scale: Positive[3], h: Real[4]) = mlp(hidden = [8], act = elu)
net ar(z: Real[3], h: Real[4]) -> (m: Real[3], s: Real[3]) = made(hidden = [6], act = elu)
net dec(z: Real[3]) -> Real[16] = mlp(hidden = [8], act = elu)
model {
  z ~ Normal(0, 1)
  x ~ Bernoulli(logits = dec(z))
}
guide {
  let (m, s, h) = enc(x)
  z ~ Normal(m, s) |> iaf(ar, h, steps = STEPS)
}
"#;

fn batch() -> Batch {
    let bits: Vec<f32> = Rng::seed(3)
        .uniform_vec(5 * 16)
        .into_iter()
        .map(|u| f32::from(u < 0.4))
        .collect();
    Batch::new(
        vec![Some(Tensor::from_vec(bits, (5, 16), &Device::Cpu).unwrap())],
        5,
    )
}

#[test]
fn zero_flow_steps_are_the_diagonal_guide() {
    let flowed = lower(&IAF.replace("STEPS", "0"), 4);
    let plain = lower(
        &IAF.replace(" |> iaf(ar, h, steps = STEPS)", "")
            .replace(
                "net ar(z: Real[3], h: Real[4]) -> (m: Real[3], s: Real[3]) = made(hidden = [6], act = elu)\n",
                "",
            ),
        4,
    );
    // Zero steps build no copy of `ar`: both models hold the same parameters.
    let names = |m: &vic::lower::LoweredModel| -> Vec<String> {
        m.store.named().into_iter().map(|(n, _)| n).collect()
    };
    assert_eq!(names(&flowed), names(&plain));
    let s = Settings::evaluation(3, false, 10);
    let a = flowed.objective(&batch(), &s, &mut Rng::seed(1)).unwrap();
    let b = plain.objective(&batch(), &s, &mut Rng::seed(1)).unwrap();
    assert_eq!(to_f64(&a.bound), to_f64(&b.bound));
    assert_eq!(to_f64(&a.loss), to_f64(&b.loss));
}

/// A built `made` network `ar(z: Real[3], h: Real[2])` with heads m and s.
fn made(hidden: &str) -> Box<dyn nets::Network> {
    let src = format!(
        "data x : Real[3] given\ndata y : Real[3]\nnet ar(z: Real[3], h: Real[2]) -> (m: Real[3], s: Real[3]) = made(hidden = {hidden}, act = tanh)\nmodel {{ y ~ Normal(ar(x, zeros(2)).m + ar(x, zeros(2)).s, 1) }}\n"
    );
    let front = vic::driver::front_end(&src, &Default::default());
    let p = front
        .program
        .unwrap_or_else(|| panic!("{:?}", front.diagnostics));
    let store = ParamStore::seeded(2, &Device::Cpu);
    nets::build(&p.nets[0], store.builder("ar")).unwrap()
}

fn forward(net: &dyn nets::Network, z: &Tensor, h: &Tensor) -> Vec<Tensor> {
    let mut rng = Rng::seed(0);
    let mut ctx = NetCtx {
        train: false,
        rng: &mut rng,
        prune: None,
    };
    net.forward(&[z.clone(), h.clone()], &mut ctx).unwrap()
}

#[test]
fn made_outputs_depend_only_on_earlier_inputs() {
    for hidden in ["[7, 5]", "[]"] {
        let net = made(hidden);
        let h = Tensor::new(&[[0.3f32, -0.8]], &Device::Cpu).unwrap();
        for head in 0..2 {
            for i in 0..3 {
                let z = Var::new(&[[0.5f32, -1.2, 0.9]], &Device::Cpu).unwrap();
                let out = forward(net.as_ref(), z.as_tensor(), &h);
                let o = out[head].narrow(1, i, 1).unwrap().sum_all().unwrap();
                let g = o.backward().unwrap();
                let dz = g
                    .get(z.as_tensor())
                    .map(to_f64)
                    .unwrap_or_else(|| vec![0.0; 3]);
                for j in 0..3 {
                    if j >= i {
                        assert_eq!(dz[j], 0.0, "{hidden}: head {head} output {i} sees z_{j}");
                    }
                }
                // Output 0 sees no z; the others see each earlier one (weights are nonzero).
                if i > 0 {
                    assert!(
                        dz[..i].iter().any(|d| *d != 0.0),
                        "{hidden}: output {i} sees nothing"
                    );
                }
            }
        }
    }
}

/// log |det| of a 3x3 matrix, by cofactor expansion in f64.
fn log_abs_det3(m: &[[f64; 3]; 3]) -> f64 {
    let d = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    d.abs().ln()
}

#[test]
fn a_flow_steps_log_determinant_is_its_jacobians() {
    let net = made("[7, 5]");
    let h = Tensor::new(&[[0.3f32, -0.8]], &Device::Cpu).unwrap();
    let apply = |z: &[f32]| -> (Vec<f64>, f64) {
        let z = Tensor::new(&[[z[0], z[1], z[2]]], &Device::Cpu).unwrap();
        let out = forward(net.as_ref(), &z, &h);
        let (next, log_sigma) = vic::lower::infer::flow::step(&z, &out[0], &out[1]).unwrap();
        (to_f64(&next), to_f64(&log_sigma)[0])
    };
    let z0 = [0.5f32, -1.2, 0.9];
    let (_, log_sigma) = apply(&z0);
    let eps = 1e-2f32;
    let mut jac = [[0.0f64; 3]; 3];
    for j in 0..3 {
        let (mut up, mut down) = (z0, z0);
        up[j] += eps;
        down[j] -= eps;
        let (a, _) = apply(&up);
        let (b, _) = apply(&down);
        for i in 0..3 {
            jac[i][j] = (a[i] - b[i]) / (2.0 * eps as f64);
        }
    }
    // Lower triangular (output i moves with z_j, j <= i only)...
    for i in 0..3 {
        for j in i + 1..3 {
            assert!(jac[i][j].abs() < 1e-4, "d z'_{i} / d z_{j} = {}", jac[i][j]);
        }
    }
    // ... and log |det J| = Σ log σ.
    let fd = log_abs_det3(&jac);
    assert!(
        (fd - log_sigma).abs() < 2e-3,
        "finite differences {fd} vs Σ log σ {log_sigma}"
    );
}

/// A posterior with correlation -0.9: z ~ N(0, I), x | z ~ N(3 (z1 + z2), 1), x = 1. The
/// guide has free parameters; `FLOW` is its flow (or nothing).
const CORRELATED: &str = r#"
data x : Real
latent z : Real[2]
param qm : Real[2] = 0.0
param qs : Positive[2] = 1.0
net ar(z: Real[2]) -> (m: Real[2], s: Real[2]) = made(hidden = [])
model {
  z ~ Normal(0, 1)
  x ~ Normal(3 * sum(z), 1)
}
guide {
  z ~ Normal(qm, qs) |> iaf(ar, steps = STEPS)
}
train { dataset = "const.npz"; objective = elbo(samples = 16); optimizer = adam(lr = 1e-2); batch = 100; epochs = 300 }
"#;

/// An .npz holding `x` (500 ones) and `x_test` (`test` ones), in numpy's stored format,
/// written here.
fn ones_npz(path: &std::path::Path, test: usize) {
    let npy = |n: usize| -> Vec<u8> {
        let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n},), }}");
        let mut h = header.into_bytes();
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(b' ');
        }
        h.push(b'\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((h.len() as u16).to_le_bytes());
        out.extend(h);
        for _ in 0..n {
            out.extend(1f32.to_le_bytes());
        }
        out
    };
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    for (name, n) in [("x.npy", 500), ("x_test.npy", test)] {
        zip.start_file(
            name,
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        std::io::Write::write_all(&mut zip, &npy(n)).unwrap();
    }
    zip.finish().unwrap();
}

/// The KL from the trained guide to the exact posterior: log p(x) - ELBO on the test split.
fn fitted_kl(steps: usize) -> f64 {
    let dir = scratch("flows", &format!("correlated{steps}"));
    ones_npz(&dir.join("const.npz"), 500);
    // The test ELBO averages one draw per example: evaluate on many examples, so that its
    // Monte Carlo error is small.
    ones_npz(&dir.join("many.npz"), 10_000);
    let spec = dir.join("c.vi");
    std::fs::write(&spec, CORRELATED.replace("STEPS", &steps.to_string())).unwrap();
    let run = dir.join("run");
    run_ok(vic().arg("train").arg(&spec).arg("--out").arg(&run));
    let out = vic()
        .args(["eval", "--samples", "2", "--json", "--dataset"])
        .arg(dir.join("many.npz"))
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["log_px"].as_f64().unwrap() - v["elbo"].as_f64().unwrap()
}

#[test]
fn a_linear_flow_closes_the_kl_the_diagonal_guide_leaves() {
    let diagonal = fitted_kl(0);
    let want = -0.5 * (1.0f64 - 0.81).ln(); // 0.830
    assert!(
        (diagonal - want).abs() < 0.05,
        "diagonal guide: KL {diagonal} vs {want}"
    );
    let flowed = fitted_kl(1);
    println!("KL left by the diagonal guide {diagonal:.4} (closed form {want:.4}); by one linear IAF step {flowed:.4}");
    assert!(flowed.abs() < 0.03, "one linear IAF step: KL {flowed}");
}
