//! Helpers shared by the integration tests that lower specs and run the `vic` binary
//! (`mod common;` in each): lowering spec source, reading parameters and tensors as f64,
//! log-space sums, scratch directories and commands.
#![allow(
    dead_code,
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used
)]

use candle_core::{Device, Tensor};
use std::path::PathBuf;
use std::process::Command;
use vic::lower::params::ParamStore;
use vic::lower::LoweredModel;

/// Checks and lowers `src`, its parameters drawn from `seed`, on the CPU; panics with the
/// diagnostics when the spec does not check.
pub fn lower(src: &str, seed: u64) -> LoweredModel {
    let front = vic::driver::front_end(src, &Default::default());
    let program = front
        .program
        .unwrap_or_else(|| panic!("{:?}", front.diagnostics));
    LoweredModel::new(program, ParamStore::seeded(seed, &Device::Cpu)).unwrap()
}

/// The elements of an f32 tensor of any shape, in f64.
pub fn to_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// The (constrained) value of parameter `id`.
pub fn param_by_id(model: &LoweredModel, id: usize) -> Vec<f64> {
    to_f64(&model.param_value(id).unwrap())
}

/// The (constrained) value of the parameter named `name`.
pub fn param(model: &LoweredModel, name: &str) -> Vec<f64> {
    let id = model
        .program
        .params
        .iter()
        .position(|p| p.name == name)
        .unwrap();
    param_by_id(model, id)
}

pub fn logsumexp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + v.iter().map(|a| (a - m).exp()).sum::<f64>().ln()
}

pub fn log_softmax(v: &[f64]) -> Vec<f64> {
    let lse = logsumexp(v);
    v.iter().map(|a| a - lse).collect()
}

/// The `vic` binary built for these tests.
pub fn vic() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vic"))
}

/// A fresh, empty directory `vic-{tag}-{name}-{pid}` under the temporary directory.
pub fn scratch(tag: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vic-{tag}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `cmd`, asserts it succeeded, and returns its stdout and stderr together.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "command failed: {text}");
    text
}

/// Runs `cmd` (a `--json` command), asserts it succeeded, and parses its standard output.
pub fn json_of(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
