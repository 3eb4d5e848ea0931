//! Micro-benchmark: one Adam step over the parameters of the target VAE (784-512-512-32,
//! encoder heads for mean and log-variance), vic's fused optimizer vs candle-nn's AdamW,
//! with ordinary gradients and with gradients so small that Adam's second moment is
//! denormal, before and after `flush_denormals_everywhere`. Prints timings; asserts
//! nothing. Each figure is the best of five rounds.
//!
//!     cargo run --release --example optim_step

#![allow(clippy::disallowed_methods)]

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer as _, ParamsAdamW};
use std::time::Instant;
use vic::ir;
use vic::train::fpu;
use vic::train::optim::Optimizer;

/// (name, shape) of every parameter: encoder 784-512-512-(32+32), decoder 32-512-512-784.
fn vae_shapes() -> Vec<(String, Vec<usize>)> {
    let layers = [
        ("enc.l1", 784, 512),
        ("enc.l2", 512, 512),
        ("enc.head", 512, 64),
        ("dec.l1", 32, 512),
        ("dec.l2", 512, 512),
        ("dec.out", 512, 784),
    ];
    let mut out = Vec::new();
    for (name, fan_in, fan_out) in layers {
        out.push((format!("{name}.weight"), vec![fan_out, fan_in]));
        out.push((format!("{name}.bias"), vec![fan_out]));
    }
    out
}

fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn params() -> Result<Vec<(String, Var)>> {
    vae_shapes()
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product();
            let t = Tensor::from_slice(&noise(n, i as u64, 0.05), shape, &Device::Cpu)?;
            Ok((name, Var::from_tensor(&t)?))
        })
        .collect()
}

fn grads(params: &[(String, Var)], scale: f32) -> Result<GradStore> {
    let mut g = GradStore::default();
    for (i, (_, v)) in params.iter().enumerate() {
        let t = Tensor::from_slice(
            &noise(v.elem_count(), 100 + i as u64, scale),
            v.shape(),
            &Device::Cpu,
        )?;
        g.insert(v.as_tensor(), t);
    }
    Ok(g)
}

/// Milliseconds per step: the best of `rounds` rounds of `n` steps, after `warm` untimed
/// ones (the best round is the one least disturbed by other processes).
fn time(mut step: impl FnMut() -> Result<()>, warm: usize, n: usize) -> Result<f64> {
    for _ in 0..warm {
        step()?;
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t0 = Instant::now();
        for _ in 0..n {
            step()?;
        }
        best = best.min(t0.elapsed().as_secs_f64() * 1e3 / n as f64);
    }
    Ok(best)
}

fn run(label: &str, grad_scale: f32) -> Result<()> {
    let config = ir::Optimizer::Adam {
        lr: 1e-3,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let ps = params()?;
    let g = grads(&ps, grad_scale)?;
    let mut fused = Optimizer::new(&config, None, ps.clone())
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let fused_ms = time(
        || {
            fused
                .step(&g, None)
                .map(|_| ())
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        },
        5,
        20,
    )?;

    let ps = params()?;
    let g = grads(&ps, grad_scale)?;
    let mut clipped = Optimizer::new(&config, Some(1e-3), ps.clone())
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let clipped_ms = time(
        || {
            clipped
                .step(&g, None)
                .map(|_| ())
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        },
        5,
        20,
    )?;

    let ps = params()?;
    let g = grads(&ps, grad_scale)?;
    let mut generic = Optimizer::new(&config, None, ps.clone())
        .and_then(|o| o.with_generic_path())
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let generic_ms = time(
        || {
            generic
                .step(&g, None)
                .map(|_| ())
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        },
        3,
        6,
    )?;

    let ps = params()?;
    let g = grads(&ps, grad_scale)?;
    let vars: Vec<Var> = ps.iter().map(|(_, v)| v.clone()).collect();
    let mut adamw = AdamW::new(
        vars,
        ParamsAdamW {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
    )?;
    let adamw_ms = time(|| adamw.step(&g), 3, 6)?;

    println!(
        "{label:<44} fused {fused_ms:7.3} ms | fused+clip {clipped_ms:7.3} ms | \
         generic path {generic_ms:7.3} ms | candle-nn AdamW {adamw_ms:7.3} ms"
    );
    Ok(())
}

fn main() -> Result<()> {
    let n: usize = vae_shapes()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    println!(
        "Adam step over the VAE's {n} parameters; rayon threads: {}",
        rayon::current_num_threads()
    );
    // Gradients of 1e-20: g*g = 1e-40 is denormal, so is the second moment, every step.
    run("ordinary gradients, no flush", 1e-3)?;
    run("tiny gradients (denormal moments), no flush", 1e-20)?;
    let how = fpu::flush_denormals_everywhere();
    println!("flush_denormals_everywhere: {how:?}");
    run("ordinary gradients, flushed", 1e-3)?;
    run("tiny gradients (denormal moments), flushed", 1e-20)?;
    Ok(())
}
